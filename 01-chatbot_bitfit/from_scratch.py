"""Lesson 01 by hand: BitFit in plain torch, then checked against the model train.py builds (BitFit needs no peft).

python 01-chatbot_bitfit/from_scratch.py --model_name_or_path tiny-bloom
"""

import sys
from pathlib import Path

import torch
from torch import nn

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # `common`, for the comparison half only


# ---------------------------------------------------------------- the method, by hand (plain torch)
def by_hand(model: nn.Module, args=None, tokenizer=None) -> nn.Module:
    """Freeze everything, then give gradients back to every module's bias: Linear and LayerNorm alike."""
    model.requires_grad_(False)
    for module in model.modules():
        if isinstance(getattr(module, "bias", None), nn.Parameter):
            module.bias.requires_grad_(True)
    return model


def bias_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What BitFit saves: the trained biases only, by name (a few MB instead of the whole model)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_biases(fresh_model: nn.Module, biases: dict[str, torch.Tensor]) -> nn.Module:
    """Put saved biases into a freshly loaded base model: every weight stays, every bias is replaced."""
    missing, unexpected = fresh_model.load_state_dict(biases, strict=False)
    if unexpected:  # strict=False is only for the frozen weights a bias file lacks
        raise KeyError(f"not tensors of this model: {unexpected[:3]}")
    return fresh_model


# ---------------------------------------------------------------- the same values, compared with train.py
def copy_values(hand: nn.Module, reference: nn.Module) -> None:
    for p in reference.parameters():  # stand-in for training: move every bias train.py trains
        if p.requires_grad:
            p.data += 0.1 * torch.randn_like(p)
    # the hand-made choice of tensors picks what to save from train.py's model; a missed bias would stay untrained
    chosen = bias_state_dict(hand).keys()
    load_biases(hand, {name: t for name, t in bias_state_dict(reference).items() if name in chosen})


def main(argv=None) -> int:
    from common.check_by_hand import check, parse_args, report

    args = parse_args(LESSON_DIR, argv, __doc__)
    result = check(LESSON_DIR, by_hand, copy_values, args)
    biases = bias_state_dict(result.hand)
    size = sum(t.numel() * t.element_size() for t in biases.values())
    note = f"bias-only state dict: {len(biases)} tensors, {size:,d} bytes, loaded onto a fresh base model"
    return report(result, type(result.hand).__name__ + " with every bias trainable", [note], label="add_method")


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(lambda argv: sys.exit(main(argv)))
