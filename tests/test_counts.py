"""The course's headline numbers: trainable-parameter counts on the real bloom-1b4-zh architecture.

The model is built on the meta device from its config (no weights, nothing downloaded), and each lesson's own
`add_method` is applied, so these counts are exactly what `python train.py` prints on the real model.
"""

import pytest
import torch
from helpers import COURSE_COUNTS, REAL_CONFIG, lesson_module, real_architecture_model
from transformers import AutoModelForCausalLM, BloomConfig


def real_architecture_line(variant: str, tokenizer_dir, extra=()) -> str:
    from common.parameters import trainable_parameters_line

    return trainable_parameters_line(real_architecture_model(variant, tokenizer_dir, extra))


@pytest.mark.parametrize("variant", list(COURSE_COUNTS))
def test_real_architecture_counts(variant, tiny_model_dir):
    trainable, total = COURSE_COUNTS[variant]
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
    from common.parameters import trainable_parameters_line

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(BloomConfig(**REAL_CONFIG))
    train = lesson_module("05", "train")
    args, _ = train.parse_train_args(train.ScriptArguments, [], train.LESSON_DIR, train.LEARNING_RATE)
    with torch.device("meta"):
        peft_model = train.add_method(model, args, None)
    peft_model.print_trainable_parameters()
    assert capsys.readouterr().out.strip().splitlines()[-1] == trainable_parameters_line(peft_model)
