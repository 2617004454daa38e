"""The course's headline numbers: trainable-parameter counts on the real bloom-1b4-zh architecture.

The model is built on the meta device from its config (no weights, nothing downloaded), and each lesson's own
`add_method` is applied, so these counts are exactly what `python train.py` prints on the real model.
"""

import pytest
import torch
from helpers import REAL_CONFIG, VARIANTS, lesson_module
from transformers import AutoModelForCausalLM, BloomConfig

# The table in the course README: variant -> (trainable, all)
EXPECTED = {
    "bitfit": (544_768, 1_303_111_680),
    "prompt_text": (14_336, 1_303_126_016),
    "prompt_random": (20_480, 1_303_132_160),
    "ptuning_mlp": (12_609_536, 1_315_721_216),
    "ptuning_lstm": (193_030_144, 1_496_141_824),
    "prefix": (983_040, 1_304_094_720),
    "prefix_proj": (205_641_728, 1_508_753_408),
    "lora_qkv": (1_572_864, 1_304_684_544),
    "lora_qkv_dense": (3_538_944, 1_306_650_624),
    "lora_regex_emb": (95_225_856, 1_398_337_536),
}


def real_architecture_model(variant: str, tokenizer_dir, extra=()):
    """The variant's model as its lesson's `add_method` builds it on the real architecture (meta device)."""
    lesson, flags = VARIANTS[variant]
    train = lesson_module(lesson, "train")
    # the real tokenizer splits the hard-prompt text into 7 tokens; the tiny one does not, so say it
    extra = list(extra) + (["--num_virtual_tokens", "7"] if variant == "prompt_text" else [])
    args, _ = train.parse_train_args(
        train.ScriptArguments, ["--model_name_or_path", str(tokenizer_dir), *flags, *extra], train.LESSON_DIR, 1e-3
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(BloomConfig(**REAL_CONFIG))
        return train.add_method(model, args, tokenizer=None)


def real_architecture_line(variant: str, tokenizer_dir, extra=()) -> str:
    from common.params import trainable_parameters_line

    return trainable_parameters_line(real_architecture_model(variant, tokenizer_dir, extra))


@pytest.mark.parametrize("variant", list(EXPECTED))
def test_real_architecture_counts(variant, tiny_model_dir):
    trainable, total = EXPECTED[variant]
    line = real_architecture_line(variant, tiny_model_dir)
    assert line == (
        f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
    )


def test_base_model_count():
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(BloomConfig(**REAL_CONFIG))
    assert sum(p.numel() for p in model.parameters()) == 1_303_111_680


def test_line_matches_peft_format(tiny_model_dir, capsys):
    """common's printer (used by BitFit, which has no peft wrapper) prints peft's own line, to the byte."""
    from common.params import trainable_parameters_line

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(BloomConfig(**REAL_CONFIG))
    args, _ = lesson_module("05", "train").parse_train_args(
        lesson_module("05", "train").ScriptArguments, [], lesson_module("05", "train").LESSON_DIR, 1e-3
    )
    with torch.device("meta"):
        peft_model = lesson_module("05", "train").add_method(model, args, None)
    peft_model.print_trainable_parameters()
    assert capsys.readouterr().out.strip() == trainable_parameters_line(peft_model)
