"""Exact trainable counts of every variant from a model's config alone: built on the meta device, no weights.

Each lesson's own `add_method` is applied, so the counts are what `train.py` prints on the real model.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from common.errors import UserError, first_line
from common.lessons import VARIANTS, lesson_module
from common.models import check_model_path, load_tokenizer
from common.parameters import count_parameters
from common.train_args import parse_train_args

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


def variant_on_meta(
    variant: str,
    config: PretrainedConfig,
    model_name_or_path: str,
    tokenizer: PreTrainedTokenizerBase | None,
    extra: Sequence[str] = (),
) -> nn.Module:
    """The variant's model, as its lesson's `add_method` builds it, on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = VARIANTS[variant]
    train = lesson_module(spec.lesson, "train")
    argv = ["--model_name_or_path", model_name_or_path, *spec.flags, *extra]
    args, _ = parse_train_args(train.ScriptArguments, argv, train.LESSON_DIR, train.LEARNING_RATE)
    # from_config on the meta device keeps the tied embedding (accelerate's init_empty_weights unties it), and
    # add_method runs inside too, or peft would allocate the prompt encoders on the CPU
    # the lessons' own progress lines (LoRA's chosen targets) would interleave with compare.py's table
    with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):
        return train.add_method(AutoModelForCausalLM.from_config(config), args, tokenizer)


# Published config.json values (huggingface.co/Qwen/Qwen2.5-0.5B and Qwen/Qwen3-0.6B): the architectures
# docs/other_models.md counts, next to bloom-1b4-zh's REAL_CONFIG
OTHER_REAL_CONFIGS = {
    "Qwen/Qwen2.5-0.5B": dict(model_type="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                              num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                              tie_word_embeddings=True),
    "Qwen/Qwen3-0.6B": dict(model_type="qwen3", hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                            num_key_value_heads=8, head_dim=128, intermediate_size=3072, vocab_size=151936,
                            tie_word_embeddings=True),
}  # fmt: skip


def count_variants(model_name_or_path: str, variants: Iterable[str] = tuple(VARIANTS)) -> list[dict]:
    """One row per variant: trainable and all parameters, and the trainable share in percent.

    A variant the lesson refuses on this architecture (BitFit without biases, LoRA targets naming BLOOM's
    modules) gets a row with no counts and the reason, so compare.py works on any causal LM."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    check_model_path(model_name_or_path)
    try:
        config = AutoConfig.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as exc:
        raise UserError(f"could not read a model config from {model_name_or_path!r}: {first_line(exc)}") from exc
    tokenizer = load_tokenizer(model_name_or_path)
    rows = []
    for variant in variants:
        spec = VARIANTS[variant]
        row = dict(variant=variant, label=spec.label, lesson=spec.folder)
        try:
            model = variant_on_meta(variant, config, model_name_or_path, tokenizer)
        except UserError as exc:
            with torch.device("meta"):
                total = count_parameters(AutoModelForCausalLM.from_config(config))[1]
            rows.append(dict(row, trainable_params=None, all_params=total, trainable_percent=None,
                             refused=first_line(exc).split(";")[0]))  # fmt: skip
            continue
        targets = getattr(getattr(model, "peft_config", {}).get("default"), "target_modules", None)
        if variant == "lora_qkv" and targets and set(targets) != {"query_key_value"}:  # peft's default here
            row["label"] = spec.label.replace("query_key_value", ", ".join(sorted(targets)))
        trainable, total = count_parameters(model)
        rows.append(dict(row, trainable_params=trainable, all_params=total,
                         trainable_percent=round(100 * trainable / total, 4)))  # fmt: skip
    return rows


def count_table(rows: list[dict]) -> str:
    """`count_variants`' rows as the markdown table the README shows."""
    lines = ["| variant | lesson | trainable params | all params | trainable% |", "|---|---|---:|---:|---:|"]
    for r in rows:
        if r["trainable_params"] is None:
            lines.append(f"| {r['label']} | {r['lesson']} | refused: {r['refused']} | {r['all_params']:,d} | - |")
            continue
        lines.append(f"| {r['label']} | {r['lesson']} | {r['trainable_params']:,d} | {r['all_params']:,d} | "
                     f"{r['trainable_percent']:.4f} |")  # fmt: skip
    return "\n".join(lines)
