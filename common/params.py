"""Trainable-parameter line in peft's exact format, for models without a peft wrapper."""

from torch import nn


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, all), each shared tensor counted once, as peft counts them."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def trainable_parameters_line(model: nn.Module) -> str:
    trainable, total = count_parameters(model)
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"


def print_trainable_parameters(model: nn.Module) -> None:
    print(trainable_parameters_line(model))
