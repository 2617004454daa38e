"""Several processes (torchrun, accelerate launch, DeepSpeed): the mechanics every lesson shares.

A lesson's train.py is the same for one process and for N: these helpers make the N-process case right
(one artifact, one count line, one tokenisation, full tensors under ZeRO-3) and do nothing for one process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import TrainingArguments


def world_size() -> int:
    """Processes in this run, as the launcher (torchrun, accelerate launch, deepspeed) announces it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def has_accelerator() -> bool:
    """Whether accelerate finds a device for several processes (GPUs and the like); without one it starts
    no process group and every process would train alone on all the data."""
    import torch

    if torch.cuda.is_available():
        return True
    from accelerate.utils import is_mlu_available, is_musa_available, is_npu_available, is_xpu_available

    return is_xpu_available() or is_npu_available() or is_mlu_available() or is_musa_available()


def process_defaults() -> dict[str, bool]:
    """`TrainingArguments` defaults for several processes; whatever the user passes wins."""
    # peft and BitFit models use every trainable tensor in every step (measured for all 10 variants), so DDP
    # need not search the graph for unused ones after each backward, as the Trainer's default would
    defaults = {"ddp_find_unused_parameters": False}
    if world_size() > 1 and not has_accelerator():
        defaults["use_cpu"] = True  # DDP over gloo on CPU instead of N unsynchronised copies
    return defaults


def setup_processes(training_args: TrainingArguments) -> None:
    """Start the process group now (so tokenising and ZeRO-3's sharded loading can use it) and keep
    stdout to rank 0, so the count line and the logs appear once."""
    from .errors import UserError

    if world_size() <= 1:
        return
    if not training_args.use_cpu and not has_accelerator():
        raise UserError(
            f"{world_size()} processes but no GPU: drop --use_cpu false (several processes then run as DDP on "
            "CPU), or launch one process"
        )
    _ = training_args.device  # reading the device starts the process group
    if training_args.deepspeed:
        import deepspeed

        if not deepspeed.comm.is_initialized():  # on CPU accelerate starts the group without DeepSpeed, whose
            deepspeed.init_distributed(auto_mpi_discovery=False)  # world size ZeRO-3's sharded loading reads
    if training_args.process_index != 0:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # for the rest of the process


def is_distributed() -> bool:
    """Whether this process is one of several in a started process group."""
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_local_main() -> bool:
    """Whether this is the first process on its machine."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


@contextmanager
def main_process_first() -> Iterator[None]:
    """The first process on each machine runs the block, the others wait and then run it (reading its cache)."""
    if not is_distributed():
        yield
        return
    import torch

    if not is_local_main():
        torch.distributed.barrier()
    yield
    if is_local_main():
        torch.distributed.barrier()


def partitioned(params: Iterable) -> list:
    """The parameters that ZeRO-3 has split across ranks (each rank holds only a slice)."""
    return [p for p in params if hasattr(p, "ds_id")]


@contextmanager
def gathered(params: Iterable) -> Iterator[None]:
    """Full tensors on every rank for the duration of the block, under ZeRO-3; nothing to do otherwise.

    Gathering is a collective step: every rank must enter the block, not only the one that writes.
    """
    split = partitioned(params)
    if not split:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(split, modifier_rank=None):
        yield
