"""Lesson 05's --target_modules: from the command line to peft, and one clear line when it names no layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from common.errors import UserError

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
            f"--target_modules {' '.join(targets or ['(default)'])} matches no layer; "
            f"Linear layers here: {', '.join(names[:8])}"
        ) from exc


def choose_target_modules(model: nn.Module, targets: list[str] | None) -> str | list[str]:
    """What LoRA adapts: the user's --target_modules, or peft's default for this architecture; one line says which.

    peft 0.21.2 keeps a default per `config.model_type` (peft.utils.constants.
    TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: bloom -> query_key_value, qwen2/qwen3/llama -> q_proj,
    v_proj); it is looked up here rather than left to peft so the choice can be printed and a missing entry
    explained. `all-linear` (peft.utils.constants.INCLUDE_LINEAR_LAYERS_SHORTHAND) is passed as the string peft
    expects: every Linear except the output layer.
    """
    from peft.utils.constants import INCLUDE_LINEAR_LAYERS_SHORTHAND

    if targets is None:
        chosen, why = default_target_modules(model), f"peft's default for {model.config.model_type}"
    elif [t.lower() for t in targets] == [INCLUDE_LINEAR_LAYERS_SHORTHAND]:
        chosen, why = INCLUDE_LINEAR_LAYERS_SHORTHAND, "every Linear except the output layer"
    else:
        chosen, why = peft_target_modules(targets), "--target_modules"
    shown = chosen if isinstance(chosen, str) else ", ".join(chosen)
    print(f"LoRA target modules: {shown} ({why})")
    return chosen


def default_target_modules(model: nn.Module) -> list[str]:
    """peft's default LoRA targets for this model's architecture (config.model_type), as a list of names."""
    from peft.utils.constants import INCLUDE_LINEAR_LAYERS_SHORTHAND, TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    default = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if default is None:
        raise UserError(
            f"peft has no default LoRA target for model type {model_type!r}; "
            f"pass --target_modules (module names, or {INCLUDE_LINEAR_LAYERS_SHORTHAND})"
        )
    return list(default)
