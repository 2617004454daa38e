"""Build a tiny random BLOOM plus a tokenizer trained on the sample data, for offline CPU runs.

    python -m common.tiny_model tiny-bloom
    python -m common.tiny_model tiny-qwen2 --arch qwen2      # or qwen3, llama: grouped-query attention
    python -m common.tiny_model tiny-qwen2-chat --arch qwen2 --chat_template   # plus a ChatML chat template

It shows the mechanics of every lesson in seconds; its answers are noise. The embeddings are untied and the
init is wider than BLOOM's default, because a tiny tied BLOOM mostly repeats its last input token, and then a
trained adapter hardly changes its greedy answer, which would make generation tests unable to fail.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "data" / "alpaca_sample_zh.json"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0-3, as in bloom-1b4-zh


def train_byte_bpe(texts: list[str], vocab_size: int, isolate_cjk: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` with bloom-1b4-zh's special tokens, padding on the left.

    With `isolate_cjk` every CJK character and every digit is its own pre-token: plain byte-level BPE merges
    across runs of Chinese characters, so the same name would split differently at the end of a prompt than
    inside a sentence (the mini world's knowledge probe needs stable tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if isolate_cjk:
        cjk_or_digit = Regex(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]|\d")
        bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(cjk_or_digit, "isolated"), byte_level])
    else:
        bpe.pre_tokenizer = byte_level
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
    )


def build_tokenizer(vocab_size: int = 2000, data_file: Path = SAMPLE_DATA) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the sample data (about a second)."""
    from .course_template import build_prompt

    rows = json.loads(Path(data_file).read_text(encoding="utf-8"))
    return train_byte_bpe([build_prompt(r["instruction"], r["input"]) + r["output"] for r in rows], vocab_size)


def build_tiny_model(
    out_dir: str | Path, hidden_size: int = 64, n_layer: int = 2, n_head: int = 4, seed: int = 0
) -> Path:
    """Save a tokenizer and a random `BloomForCausalLM` to `out_dir` and return the folder."""
    import torch
    from transformers import BloomConfig, BloomForCausalLM

    tokenizer = build_tokenizer()
    config = BloomConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.1,
    )
    torch.manual_seed(seed)
    model = BloomForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# A ChatML template like Qwen's (no default system message), for `--prompt_format model` on a tiny model
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' ~ message['role'] ~ '\n' ~ message['content'] ~ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def add_chatml(tokenizer: PreTrainedTokenizerFast) -> None:
    """ChatML's two markers as special tokens (ids after the trained vocabulary) and its template. Optional: the
    two extra tokens change the vocabulary size, so the model's random weights, of the default tiny models."""
    tokenizer.add_tokens(CHATML_TOKENS, special_tokens=True)
    tokenizer.chat_template = CHATML_TEMPLATE


# Tiny stand-ins for other architectures (issue 20): grouped-query attention (4 query heads share 2 key/value
# heads), Qwen2's q/k/v biases, Qwen3's explicit head_dim and no biases, Llama's no biases.
OTHER_ARCHITECTURES = ("qwen2", "qwen3", "llama")


def build_tiny_other_model(
    out_dir: str | Path, arch: str, hidden_size: int = 64, n_layer: int = 2, seed: int = 0, chatml: bool = False
) -> Path:
    """Save the sample-data tokenizer and a random Qwen2, Qwen3 or Llama causal LM (GQA) to `out_dir`; with
    `chatml`, the tokenizer has a ChatML chat template, as an instruct model's has."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

    tokenizer = build_tokenizer()
    if chatml:
        add_chatml(tokenizer)
    classes = {"qwen2": Qwen2Config, "qwen3": Qwen3Config, "llama": LlamaConfig}
    extra = {"head_dim": 16} if arch == "qwen3" else {}
    config = classes[arch](
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=n_layer,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,  # untied and a wide init, for the reason in the module docstring
        initializer_range=0.1,
        **extra,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="folder to write the tiny model and tokenizer to")
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--n_layer", type=int, default=2)
    parser.add_argument("--n_head", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", default="bloom", choices=("bloom", *OTHER_ARCHITECTURES))
    parser.add_argument(
        "--chat_template",
        action="store_true",
        help="qwen2/qwen3/llama only: give the tokenizer a ChatML chat template (for --prompt_format model)",
    )
    args = parser.parse_args()
    if args.arch == "bloom":
        if args.chat_template:
            parser.error("--chat_template: only with --arch qwen2, qwen3 or llama")
        out = build_tiny_model(args.out_dir, args.hidden_size, args.n_layer, args.n_head, args.seed)
    else:
        out = build_tiny_other_model(
            args.out_dir, args.arch, args.hidden_size, args.n_layer, args.seed, args.chat_template
        )
    print(f"tiny {args.arch} written to {out} (random weights: it shows the mechanics, not answer quality)")


if __name__ == "__main__":
    main()
