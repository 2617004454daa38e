"""Lesson 04 by hand: prefix tuning in plain torch, then checked against the peft model train.py builds.

python 04-chatbot_prefix_tuning/from_scratch.py --model_name_or_path tiny-bloom --prefix_projection false|true
"""

import sys
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache  # the KV-cache container BLOOM reads its past keys and values from

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # `common`, for the comparison half only


# ---------------------------------------------------------------- the method, by hand (plain torch)
class PrefixEncoder(nn.Module):
    """One key and one value vector per layer and virtual token
    (peft 0.21.2, tuners/prefix_tuning/model.py, PrefixEncoder). w is the width of one layer's keys:
    kv_heads x head_dim, which is the hidden size h for BLOOM and less under grouped-query attention (Qwen,
    Llama), where several query heads share one key/value head."""

    def __init__(self, num_virtual_tokens: int, layers: int, width: int, encoder_hidden: int, projection: bool):
        super().__init__()
        if projection:  # a two-layer MLP makes all layers' K and V from one small embedding per token
            self.embedding = nn.Embedding(num_virtual_tokens, width)  # (nvt, w)
            self.transform = nn.Sequential(
                nn.Linear(width, encoder_hidden), nn.Tanh(), nn.Linear(encoder_hidden, layers * 2 * width)
            )
        else:  # learned directly
            self.embedding = nn.Embedding(num_virtual_tokens, layers * 2 * width)  # (nvt, 2 L w)

    def forward(self, batch: int) -> torch.Tensor:
        x = self.embedding.weight.repeat(batch, 1, 1)  # (B, nvt, w or 2 L w): one copy per row, as peft does
        return self.transform(x) if hasattr(self, "transform") else x  # (B, nvt, 2 L w)


def to_cache(prefix: torch.Tensor, layers: int, heads: int) -> DynamicCache:
    """Cut (B, nvt, 2 L w) into each layer's keys and values, in the layout peft builds
    (peft 0.21.2, peft_model.py, PeftModel.get_prompt)."""
    batch, nvt, width = prefix.shape
    kv = prefix.view(batch, nvt, 2 * layers, heads, width // (2 * layers * heads))  # (B, nvt, 2L, nh, hd)
    kv = kv.permute(2, 0, 3, 1, 4)  # (2L, B, nh, nvt, hd)
    return DynamicCache([(kv[2 * i], kv[2 * i + 1]) for i in range(layers)])  # layer i: K, V (B, nh, nvt, hd)


class PrefixTuningLM(nn.Module):
    """Frozen base model that finds the prefixes already in its KV cache, as if it had read nvt tokens."""

    def __init__(self, base: nn.Module, prefix_encoder: PrefixEncoder):
        super().__init__()
        self.base, self.prompt_encoder = base.requires_grad_(False), prefix_encoder  # peft's name
        self.layers, self.heads = base.config.num_hidden_layers, kv_heads_and_dim(base.config)[0]

    def forward(self, input_ids, attention_mask, labels=None):
        batch, n = input_ids.shape[0], self.prompt_encoder.embedding.num_embeddings
        cache = to_cache(self.prompt_encoder(batch).to(self.base.dtype), self.layers, self.heads)
        mask = torch.cat([attention_mask.new_ones(batch, n), attention_mask], dim=1)  # (B, nvt + T)
        return self.base(input_ids=input_ids, attention_mask=mask, past_key_values=cache, labels=labels)


def kv_heads_and_dim(config) -> tuple[int, int]:
    """Key/value heads and head size: BLOOM has one K/V head per query head; GQA models say num_key_value_heads,
    Qwen3 also an explicit head_dim (peft 0.21.2, utils/other.py, _prepare_prompt_learning_config)."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return heads, head_dim


def by_hand(model: nn.Module, args, tokenizer=None) -> PrefixTuningLM:
    c = model.config
    heads, head_dim = kv_heads_and_dim(c)
    width = heads * head_dim  # = hidden for BLOOM
    # encoder size left unset = that width (peft 0.21.2, utils/other.py, _prepare_prompt_learning_config)
    encoder = PrefixEncoder(
        args.num_virtual_tokens, c.num_hidden_layers, width, args.encoder_hidden_size or width, args.prefix_projection
    )
    return PrefixTuningLM(model, encoder)


# ---------------------------------------------------------------- the same values, compared with peft
def copy_values(hand: PrefixTuningLM, reference) -> None:
    hand.prompt_encoder.load_state_dict(reference.prompt_encoder["default"].state_dict(), strict=True)


def main(argv=None) -> int:
    from common.check_by_hand import check, parse_args, report

    args = parse_args(LESSON_DIR, argv, __doc__)
    result = check(LESSON_DIR, by_hand, copy_values, args)
    hand, batch = result.hand, len(result.batch["input_ids"])
    keys = to_cache(hand.prompt_encoder(batch), hand.layers, hand.heads).layers[0].keys
    note = f"{hand.layers} layers, each: K and V of shape (batch, heads, prefix_len, head_dim) = {tuple(keys.shape)}"
    return report(result, hand.prompt_encoder, [note])


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(lambda argv: sys.exit(main(argv)))
