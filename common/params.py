"""Trainable-parameter line in peft's exact format, for models without a peft wrapper."""

from torch import nn


def numel(p: nn.Parameter) -> int:
    # a parameter partitioned by DeepSpeed ZeRO-3 is an empty placeholder; ds_numel is its full size
    return getattr(p, "ds_numel", p.numel()) if p.numel() == 0 else p.numel()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, all), each shared tensor counted once, as peft counts them (ZeRO-3 partitions included)."""
    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    return trainable, sum(numel(p) for p in model.parameters())


def trainable_parameters_line(model: nn.Module) -> str:
    trainable, total = count_parameters(model)
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"


def print_trainable_parameters(model: nn.Module) -> None:
    print(trainable_parameters_line(model))
