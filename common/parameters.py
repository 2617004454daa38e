"""The trainable parameters (those with requires_grad): how many, in peft's exact line, and their values by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .distributed import partitioned

if TYPE_CHECKING:
    import torch
    from torch import nn


def numel(p: nn.Parameter) -> int:
    # a parameter partitioned by DeepSpeed ZeRO-3 is an empty placeholder; ds_numel is its full size
    return getattr(p, "ds_numel", p.numel()) if p.numel() == 0 else p.numel()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, all), each shared tensor counted once, as peft counts them (ZeRO-3 partitions included).

    A peft model counts itself (`PeftModel.get_nb_trainable_parameters`), so the figure is the one its
    `print_trainable_parameters` line shows, whatever peft's rules (e.g. for packed 4-bit weights)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    return trainable, sum(numel(p) for p in model.parameters())


def trainable_parameters_line(model: nn.Module) -> str:
    """peft's `print_trainable_parameters` line, for any model (BitFit's has no peft wrapper)."""
    trainable, total = count_parameters(model)
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"


def print_trainable_parameters(model: nn.Module) -> None:
    print(trainable_parameters_line(model))


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter's value, by name: what a checkpoint must hold to resume exactly.

    Under ZeRO-3 call it inside `common.distributed.gathered(...)`: outside, each rank holds only a placeholder.
    """
    state = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    empty = [name for name, t in state.items() if t.numel() == 0]
    if empty and partitioned(p for p in model.parameters() if p.requires_grad):
        raise RuntimeError(f"{empty[0]} is partitioned by ZeRO-3; read it inside common.distributed.gathered()")
    return state
