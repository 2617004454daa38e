"""Trainable-parameter line in peft's exact format, for models without a peft wrapper."""

from torch import nn


def trainable_parameters_line(model: nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"


def print_trainable_parameters(model: nn.Module) -> None:
    print(trainable_parameters_line(model))
