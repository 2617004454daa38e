"""Lesson 06 by hand: IA3 in plain torch, then checked against the peft model train.py builds.

python 06-chatbot_ia3/from_scratch.py --model_name_or_path tiny-bloom
"""

import sys
from pathlib import Path

import torch
from torch import nn

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # `common`, for the comparison half only

# peft 0.21.2's IA3 defaults (utils/constants.py, TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING and
# TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING) for the architectures this course runs:
# model type -> (the layers that get a vector, the feed-forward ones among them)
DEFAULT_LAYERS = {
    "bloom": (["query_key_value", "mlp.dense_4h_to_h"], ["mlp.dense_4h_to_h"]),
    "qwen2": (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    "qwen3": (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
}


# ---------------------------------------------------------------- the method, by hand (plain torch)
class IA3Linear(nn.Module):
    """A frozen nn.Linear with one learned vector l multiplied into it element-wise: into its output, or for a
    feed-forward layer into its input (peft 0.21.2, tuners/ia3/layer.py, IA3Layer.update_layer, Linear.forward
    and Linear.merge)."""

    def __init__(self, base_layer: nn.Linear, is_feedforward: bool):
        super().__init__()
        self.base_layer = base_layer
        self.is_feedforward = is_feedforward
        # peft's shapes: (1, in) scales the input's features, (out, 1) the output's
        shape = (1, base_layer.in_features) if is_feedforward else (base_layer.out_features, 1)
        self.ia3_l = nn.Parameter(torch.ones(shape))  # ones: step 0 equals the base model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_feedforward:
            return self.base_layer(x * self.ia3_l.flatten())  # W (l * x) + b
        return self.base_layer(x) * self.ia3_l.flatten()  # l * (W x + b): the bias is scaled too

    def merge(self) -> nn.Linear:
        # W * l broadcasts: (1, in) scales column j by l_j (the input's feature j), (out, 1) scales row i by l_i
        self.base_layer.weight.data *= self.ia3_l.data
        if not self.is_feedforward and self.base_layer.bias is not None:
            self.base_layer.bias.data *= self.ia3_l.data.flatten()  # l * (W x + b): b is scaled too
        return self.base_layer

    def extra_repr(self) -> str:
        return f"scales={'input' if self.is_feedforward else 'output'}, ia3_l={tuple(self.ia3_l.shape)}"


def is_target(name: str, targets: list[str]) -> bool:
    """peft matches list entries as full names or name suffixes at a dot
    (peft 0.21.2, tuners/tuners_utils.py, check_target_module_exists)."""
    return any(name == t or name.endswith("." + t) for t in targets)


def swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def by_hand(model: nn.Module, args=None, tokenizer=None) -> nn.Module:
    model_type = model.config.model_type
    if model_type not in DEFAULT_LAYERS:
        raise ValueError(f"no IA3 defaults written down here for {model_type!r}; add its row to DEFAULT_LAYERS")
    targets, feedforward = DEFAULT_LAYERS[model_type]
    model.requires_grad_(False)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and is_target(name, targets):
            # peft's feed-forward test is a plain suffix (tuners/ia3/model.py, _check_target_module_feedforward)
            swap(model, name, IA3Linear(module, is_feedforward=any(name.endswith(f) for f in feedforward)))
    return model


def merge_by_hand(model: nn.Module) -> nn.Module:
    for name, module in [(n, m) for n, m in model.named_modules() if isinstance(m, IA3Linear)]:
        swap(model, name, module.merge())
    return model


# ---------------------------------------------------------------- the same values, compared with peft
def copy_values(hand: nn.Module, reference) -> None:
    # vectors of ones change nothing, so a misplaced one would go unseen: move them as training would
    for p in filter(lambda p: p.requires_grad, reference.parameters()):
        p.data += 0.1 * torch.randn_like(p)
    # a random model's biases are zero, which would hide whether an output vector scales the bias too:
    # give the adapted layers' biases values, as a pretrained model has
    for name, p in reference.named_parameters():
        if name.endswith("base_layer.bias"):
            p.data += 0.1 * torch.randn_like(p)
    state = {name.replace(".default", ""): v for name, v in reference.base_model.model.state_dict().items()}
    hand.load_state_dict(state, strict=True)


def main(argv=None) -> int:
    from common.check_by_hand import check, parse_args, report

    args = parse_args(LESSON_DIR, argv, __doc__)
    result = check(LESSON_DIR, by_hand, copy_values, args)
    first = next(m for m in result.hand.modules() if hasattr(m, "self_attention") or hasattr(m, "self_attn"))
    shown = "\n".join(f"{name}: {m}" for name, m in first.named_modules() if isinstance(m, IA3Linear))
    return report(result, shown)


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(lambda argv: sys.exit(main(argv)))
