"""Lesson 05 by hand: LoRA in plain torch, then checked against the peft model train.py builds.

python 05-chatbot_lora/from_scratch.py --model_name_or_path tiny-bloom [--target_modules ...] [--modules_to_save ...]
python 05-chatbot_lora/from_scratch.py --model_name_or_path tiny-bloom --target_modules all-linear   # as peft's
"""

import copy
import re
import sys
from pathlib import Path

import torch
from torch import nn

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # `common`, for the comparison half only


# ---------------------------------------------------------------- the method, by hand (plain torch)
class LoRALinear(nn.Module):
    """W x + (alpha / r) * B(A(dropout(x))) beside a frozen nn.Linear
    (peft 0.21.2, tuners/lora/layer.py, LoraLayer.update_layer and Linear.forward)."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: int, dropout: float):
        super().__init__()
        self.base_layer = base_layer
        self.lora_dropout = nn.Dropout(dropout)
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False)  # A: (r, in), nn.Linear's kaiming init
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False)  # B: (out, r)
        nn.init.zeros_(self.lora_B.weight)  # B starts at zero, so step 0 equals the base model
        self.scaling = alpha / r  # with alpha fixed, a new r needs less learning-rate retuning, not none

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def merge(self) -> nn.Linear:
        self.base_layer.weight.data += (self.lora_B.weight @ self.lora_A.weight) * self.scaling  # (out, in)
        return self.base_layer


class ModulesToSave(nn.Module):
    """A trained copy used in the forward pass; the original stays frozen
    (peft 0.21.2, utils/other.py, ModulesToSaveWrapper)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.original_module = module  # a tied lm_head keeps using this frozen one
        self.modules_to_save = copy.deepcopy(module).requires_grad_(True)

    def forward(self, *args, **kwargs):
        return self.modules_to_save(*args, **kwargs)


def is_target(name: str, targets: list[str]) -> bool:
    """One value with regex syntax: a pattern on the full name; otherwise name suffixes
    (peft 0.21.2, tuners/tuners_utils.py, check_target_module_exists)."""
    if len(targets) == 1 and any(ch in targets[0] for ch in "*[]()|?+\\^$"):
        return re.fullmatch(targets[0], name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def all_linear(model: nn.Module) -> list[str]:
    """`--target_modules all-linear` as peft 0.21.2 reads it (tuners/tuners_utils.py,
    _maybe_include_all_linear_layers): every nn.Linear except the output layer, whose rows are the vocabulary."""
    output = model.get_output_embeddings()
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not output]


def by_hand(model: nn.Module, args, tokenizer=None) -> nn.Module:
    if args.target_modules is None:  # train.py's default: peft's list for the architecture (a table, not code)
        from common.lessons import lesson_module

        targets = lesson_module(LESSON_DIR.name, "targets").default_target_modules(model)
    elif [t.lower() for t in args.target_modules] == ["all-linear"]:
        targets = all_linear(model)  # full names: is_target matches them exactly
    else:
        targets = args.target_modules
    model.requires_grad_(False)
    for name, module in list(model.named_modules()):
        if name.rpartition(".")[2] in (args.modules_to_save or []):
            swap(model, name, ModulesToSave(module))
        elif isinstance(module, nn.Linear) and is_target(name, targets):
            swap(model, name, LoRALinear(module, args.lora_r, args.lora_alpha, args.lora_dropout))
    return model


def merge_by_hand(model: nn.Module) -> nn.Module:
    for name, module in [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        swap(model, name, module.merge())
    return model


# ---------------------------------------------------------------- the same values, compared with peft
def copy_values(hand: nn.Module, reference) -> None:
    # B = 0 would hide the LoRA branch, and an untrained copy equals the original: move them as training would
    for p in filter(lambda p: p.requires_grad, reference.parameters()):
        p.data += 0.1 * torch.randn_like(p)
    state = {name.replace(".default", ""): v for name, v in reference.base_model.model.state_dict().items()}
    hand.load_state_dict(state, strict=True)


def main(argv=None) -> int:
    from common.check_by_hand import check, parse_args, report

    args = parse_args(LESSON_DIR, argv, __doc__)
    result = check(LESSON_DIR, by_hand, copy_values, args)
    shown = next(m for m in result.hand.modules() if isinstance(m, LoRALinear))
    return report(result, shown)


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(lambda argv: sys.exit(main(argv)))
