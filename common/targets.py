"""LoRA's --target_modules: from the command line to peft, and one clear line when it names no layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from torch import nn

REGEX_CHARACTERS = "*[]()|?+\\^$"


def peft_target_modules(targets: list[str]) -> str | list[str]:
    """peft reads a string as a regex on full module names and a list as exact or suffix names; the command
    line always gives a list, so one value with regex syntax is handed over as a string."""
    if len(targets) == 1 and any(ch in targets[0] for ch in REGEX_CHARACTERS):
        return targets[0]
    return targets


@contextmanager
def explain_missing_targets(model: nn.Module, targets: list[str]) -> Iterator[None]:
    """peft's error for targets that match nothing, as one line listing the Linear layers there are."""
    try:
        yield
    except ValueError as exc:
        if "not found in the base model" not in str(exc) and "Target modules" not in str(exc):
            raise
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise UserError(
            f"--target_modules {' '.join(targets)} matches no layer; Linear layers here: {', '.join(names[:8])}"
        ) from exc
