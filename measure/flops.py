"""Useful training FLOPs of one row: what a training step must compute, padding not counted.

Per row of n real tokens (the convention of the PaLM paper's model-FLOPs utilisation, appendix B, with frozen
weights taken out of the backward pass):

    matmuls     every weight matrix a token passes through (attention and MLP projections, LoRA's A and B,
                the tied output layer; an embedding lookup computes nothing):
                forward 2 FLOPs per weight per token; the backward pass adds 2 more for the gradient of the
                layer's input (only where something below it needs a gradient) and 2 for the gradient of the
                weight (only for trainable weights). Full fine-tuning is the familiar 6 N per token.
    attention   per layer, scores Q K^T and the weighted sum of V: 2 x 2 x hidden FLOPs per (query, key) pair
                forward; backward, the gradients of the scores, V, Q and K: 2 x hidden each, so 12 x hidden per
                pair and layer. Where nothing below a layer's queries trains (the first layer under prefix
                tuning: frozen embedding, frozen projections, trainable prefix keys and values), the gradient of
                Q is not computed: 10 x hidden. Eager attention computes every pair; the causal mask hides some.
    encoders    a prompt or prefix encoder (P-tuning's MLP or LSTM, a prefix projection) runs once per virtual
                token of every row, forward and backward like a trainable matmul.

Virtual tokens count as sequence: prompt tuning and P-tuning prepend P of them to every row (n + P queries
and keys); prefix tuning prepends P keys to every layer (n queries, n + P keys).

`row_flops(model)` finds which weights a row passes through and which inputs need a gradient by one forward
pass with hooks, so the same code counts every method and architecture; tests/test_flops.py checks the count
against torch's own FLOP counter on a real forward and backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

# attention submodules applied after the weighted sum (their gradient does not reach Q): BLOOM, Llama/Qwen, GPT-2
OUTPUT_PROJECTIONS = {"dense", "o_proj", "out_proj", "c_proj"}


@dataclass(frozen=True)
class RowFlops:
    per_token: float  # matmul FLOPs per query token, forward + backward
    per_pair: float  # attention FLOPs per (query, key) pair, every layer
    per_virtual: float  # encoder FLOPs per virtual token
    prompt_tokens: int  # virtual tokens prepended to the sequence (prompt tuning, P-tuning)
    prefix_tokens: int  # virtual keys prepended in every layer (prefix tuning)

    def row(self, n: int) -> float:
        """Useful FLOPs of one training row of n real tokens."""
        queries = n + self.prompt_tokens
        keys = queries + self.prefix_tokens
        virtual = self.prompt_tokens + self.prefix_tokens
        return self.per_token * queries + self.per_pair * queries * keys + self.per_virtual * virtual

    def rows(self, lengths) -> float:
        return sum(self.row(n) for n in lengths)


def _virtual_tokens(model: nn.Module) -> tuple[int, int]:
    """(prompt tokens, prefix tokens) of a peft prompt-learning model; (0, 0) for anything else."""
    config = getattr(model, "active_peft_config", None)
    if config is None or not getattr(config, "is_prompt_learning", False):
        return 0, 0
    if str(getattr(config.peft_type, "value", config.peft_type)) == "PREFIX_TUNING":
        return 0, config.num_virtual_tokens
    return config.num_virtual_tokens, 0


def row_flops(model: nn.Module) -> RowFlops:
    """Count the model's FLOPs per token, per attention pair and per virtual token (see the module docstring)."""
    import torch
    from torch import nn

    prompt_tokens, prefix_tokens = _virtual_tokens(model)
    # any probe length works; this one differs from the virtual tokens, so an encoder's calls (P rows)
    # cannot be taken for the decoder's (queries rows)
    probe = prompt_tokens + prefix_tokens + 1
    queries = probe + prompt_tokens
    calls: list[tuple[int, float]] = []  # (rows the module processed, FLOPs per row)
    attention_layers: list[bool] = []  # per layer: whether its queries need a gradient

    def weight_flops(module: nn.Module, input_needs_grad: bool) -> float:
        weights = [p for name, p in module.named_parameters(recurse=False) if p.dim() == 2]
        if isinstance(module, nn.LSTM):  # the gate matrices: every step multiplies by weight_ih and weight_hh
            weights = [p for name, p in module.named_parameters() if name.startswith("weight_")]
        flops = 0.0
        for w in weights:
            # a quantised Linear (bitsandbytes) may store its weight packed; it computes with the whole matrix
            linear_weight = isinstance(module, nn.Linear) and w is module.weight
            size = module.in_features * module.out_features if linear_weight else w.numel()
            flops += 2 * size * (1 + input_needs_grad + w.requires_grad)
        return flops

    def hook(module, inputs, _output):
        x = inputs[0]
        width = module.in_features if isinstance(module, nn.Linear) else module.input_size
        calls.append((x.numel() // width, weight_flops(module, x.requires_grad)))

    def attention_hook(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        projections = [p for name, p in module.named_parameters() if name.split(".")[0] not in OUTPUT_PROJECTIONS]
        attention_layers.append(x.requires_grad or any(p.requires_grad for p in projections))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.LSTM))]
    handles += [
        m.register_forward_pre_hook(attention_hook, with_kwargs=True)
        for m in model.modules()
        if type(m).__name__.endswith("Attention")
    ]
    try:
        ids = torch.ones(1, probe, dtype=torch.long, device=next(model.parameters()).device)
        with torch.enable_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for h in handles:
            h.remove()
    per_token = sum(f for rows, f in calls if rows == queries)
    per_virtual = sum(f for rows, f in calls if rows != queries)  # each encoder call: f per virtual token
    config = model.config if not hasattr(model, "get_base_model") else model.get_base_model().config
    if len(attention_layers) != config.num_hidden_layers:
        raise ValueError(f"found {len(attention_layers)} attention modules, the config says {config.num_hidden_layers}")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    width = config.num_attention_heads * head_dim  # query heads; GQA shares keys, not the score FLOPs
    return RowFlops(
        per_token=per_token,
        per_pair=sum(12 if q else (10 if prefix_tokens else 4) for q in attention_layers) * width,
        per_virtual=per_virtual,
        prompt_tokens=prompt_tokens,
        prefix_tokens=prefix_tokens,
    )
