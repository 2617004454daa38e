"""Lesson 07 from scratch: several LoRA adapters in one layer, and a batch whose rows use different ones.

python 07-chatbot_adapters/from_scratch.py

The upper half is plain torch (no peft, no `common`): `MultiLoRALinear` keeps any number of named (A, B, scaling)
beside one frozen nn.Linear and adds, to each row of a batch, the update of that row's adapter (none for
"__base__"). The lower half puts peft on a small custom nn.Module (target_modules by module name), prints what
get_peft_model wraps, adds a second adapter with another rank and other target layers, and checks that the
hand-made layers give peft's outputs for a mixed batch, and that each row equals its adapter alone.
"""

import sys

import torch
from torch import nn

BASE = "__base__"  # peft's name for "no adapter" in adapter_names


class TinyNet(nn.Module):
    """Any nn.Module will do: peft finds layers by their names (`embed`, `body.0`, `body.2`, `head`)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(self.embed(x)))


class MultiLoRALinear(nn.Module):
    """peft 0.21.2 tuners/lora/layer.py, `Linear.forward` and `_mixed_batch_forward`: a frozen base layer and
    ModuleDicts of adapters by name; attribute names as peft's (base_layer, lora_A, lora_B)."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.lora_A, self.lora_B, self.scaling = nn.ModuleDict(), nn.ModuleDict(), {}

    def add(self, name: str, r: int, alpha: int) -> None:
        self.lora_A[name] = nn.Linear(self.base_layer.in_features, r, bias=False)
        self.lora_B[name] = nn.Linear(r, self.base_layer.out_features, bias=False)
        nn.init.zeros_(self.lora_B[name].weight)  # starts as the base layer exactly
        self.scaling[name] = alpha / r

    def forward(self, x: torch.Tensor, adapter_names: list[str]) -> torch.Tensor:
        out = self.base_layer(x)
        for name in set(adapter_names):
            rows = [i for i, n in enumerate(adapter_names) if n == name]
            if name in self.lora_A:  # "__base__", or an adapter that does not target this layer: the base only
                out[rows] += self.lora_B[name](self.lora_A[name](x[rows])) * self.scaling[name]
        return out


def by_hand(model: nn.Module, adapters: dict[str, tuple[list[str], int, int]]) -> nn.Module:
    """Wrap every nn.Linear whose name is one of an adapter's targets (or ends in '.' + one): name -> (targets,
    r, alpha). A layer targeted by several adapters holds them all."""
    for name, (targets, r, alpha) in adapters.items():
        for full, module in list(model.named_modules()):
            hit = any(full == t or full.endswith("." + t) for t in targets)
            if hit and isinstance(module, (nn.Linear, MultiLoRALinear)):
                if isinstance(module, nn.Linear):
                    parent, _, child = full.rpartition(".")
                    module = MultiLoRALinear(module)
                    setattr(model.get_submodule(parent) if parent else model, child, module)
                module.add(name, r, alpha)
    return model


def forward_mixed(model: nn.Module, x: torch.Tensor, adapter_names: list[str]) -> torch.Tensor:
    """The model's forward with every MultiLoRALinear told which adapter each row uses (peft does this with a
    forward pre-hook on every LoRA layer)."""
    hooks = [m.register_forward_pre_hook(lambda mod, args: (args[0], adapter_names))
             for m in model.modules() if isinstance(m, MultiLoRALinear)]  # fmt: skip
    try:
        return model(x)
    finally:
        for hook in hooks:
            hook.remove()


# ---------------------------------------------------------------- against peft
ADAPTERS = {"default": (["0"], 2, 4), "wide": (["embed", "head"], 4, 4)}  # name -> (targets, r, alpha)
ROWS = ["default", "wide", BASE, "wide", "default"]


def main(argv: list[str] | None = None) -> int:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    net = TinyNet()
    print("modules of TinyNet:", [name for name, _ in net.named_modules() if name])
    reference = TinyNet()
    reference.load_state_dict(net.state_dict())
    # target_modules=["0"]: a list item matches a full name or its last dotted parts, so "0" is body.0 only
    targets, r, alpha = ADAPTERS["default"]
    peft_model = get_peft_model(net, LoraConfig(target_modules=targets, r=r, lora_alpha=alpha, lora_dropout=0.0))
    targets, r, alpha = ADAPTERS["wide"]
    peft_model.add_adapter("wide", LoraConfig(target_modules=targets, r=r, lora_alpha=alpha, lora_dropout=0.0))
    print("what get_peft_model wraps (then add_adapter('wide')):")
    print(peft_model.base_model.model)
    for name, p in peft_model.named_parameters():  # stand-in for training: B = 0 would hide every mistake
        if "lora_" in name:
            p.data.normal_(0, 0.5)
    hand = by_hand(reference, ADAPTERS)
    hand.load_state_dict({k.replace("base_model.model.", ""): v
                          for k, v in peft_model.state_dict().items()}, strict=True)  # fmt: skip
    peft_model.eval()
    x = torch.randn(len(ROWS), 6)
    with torch.no_grad():
        mixed = peft_model(x, adapter_names=ROWS)
        by_hand_out = forward_mixed(hand, x, ROWS)
        alone = {}
        for name in ADAPTERS:
            peft_model.set_adapter(name)
            alone[name] = peft_model(x)
        with peft_model.disable_adapter():
            alone[BASE] = peft_model(x)
    row_gap = max((mixed[i] - alone[name][i]).abs().max().item() for i, name in enumerate(ROWS))
    hand_gap = (mixed - by_hand_out).abs().max().item()
    print(f"rows {ROWS}")
    print(f"max |mixed batch - each row's adapter alone| (peft): {row_gap:.1e}")
    print(f"max |hand-made - peft| on the mixed batch: {hand_gap:.1e}")
    return 0 if row_gap <= 1e-6 and hand_gap <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
