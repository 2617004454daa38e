"""The fast defaults change speed, not the result; the benchmark runs and prints every figure."""

import subprocess
import sys

import pytest
import torch
from helpers import ROOT, initial_model, lesson_module

# the same 24 rows in the same order for both layouts; rows differ in length, so batches of 8 are padded
SAME_ORDER = ["--max_steps", "3", "--train_sampling_strategy", "sequential", "--save_strategy", "no",
              "--logging_steps", "1", "--disable_tqdm", "true", "--report_to", "none"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("lesson, flags", [("05", ["--lora_dropout", "0"]), ("02", ["--prompt_init", "random"])])
def test_batch_8_trains_the_same_adapter_as_batch_1_times_8(lesson, flags, tiny_model_dir, tmp_path):
    """LoRA's dropout is off: its masks would differ between layouts (the tiny BLOOM has no dropout)."""
    train = lesson_module(lesson, "train")
    dataset = str(ROOT / "data" / "alpaca_sample_zh.json")
    states, losses = [], []
    for batch, accumulation in ((1, 8), (8, 1)):
        argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", dataset, "--output_dir",
                str(tmp_path / f"{batch}x{accumulation}"), "--per_device_train_batch_size", str(batch),
                "--gradient_accumulation_steps", str(accumulation), *SAME_ORDER, *flags]  # fmt: skip
        trainer = train.main(argv)
        states.append({n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad})
        losses.append([h["loss"] for h in trainer.state.log_history if "loss" in h])
    course, fast = states
    assert course.keys() == fast.keys() and course
    start = initial_model(lesson, ["--model_name_or_path", str(tiny_model_dir), *SAME_ORDER, *flags])
    initial = {n: p.detach() for n, p in start.named_parameters() if n in course}
    for name in course:
        assert not torch.equal(course[name], initial[name]), f"{name} did not train: the test would prove nothing"
        torch.testing.assert_close(fast[name], course[name], rtol=0, atol=1e-6, msg=f"{name} differs")
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_default_layout_is_batch_8_grouped_by_length(tmp_path):
    train = lesson_module("05", "train")
    _, args = train.parse_train_args(train.ScriptArguments, ["--output_dir", str(tmp_path)], train.LESSON_DIR, 1e-3)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 1)
    assert args.train_sampling_strategy == "group_by_length"
    course = ["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "8",
              "--train_sampling_strategy", "random", "--output_dir", str(tmp_path)]  # fmt: skip
    _, args = train.parse_train_args(train.ScriptArguments, course, train.LESSON_DIR, 1e-3)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 8)
    assert args.train_sampling_strategy == "random"


def test_eval_order_is_fixed_whatever_the_training_order():
    """The Trainer alone would length-group eval rows too when training is grouped by length."""
    from types import SimpleNamespace

    from common.trainer import TrainableStateTrainer

    trainer = SimpleNamespace(args=SimpleNamespace(world_size=1, train_sampling_strategy="group_by_length"))
    rows = [{"input_ids": [1] * n} for n in (3, 40, 7, 90, 12, 5, 60, 2, 33, 8)]
    order = list(iter(TrainableStateTrainer._get_eval_sampler(trainer, rows)))
    assert order == list(range(len(rows)))


@pytest.mark.slow
def test_benchmark_prints_every_figure(tiny_model_dir, tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench.py"), "--model_name_or_path", str(tiny_model_dir), "--samples", "8",
         "--eval_rows", "8", "--generation", "--gen_tokens", "4", "--output_dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for figure in ("samples/s", "tokens/s", "pad eff.", "peak MB", "eval loss", "speed ratio (b)/(a):"):
        assert figure in text, f"{figure!r} missing:\n{text}"
    runs = [line for line in text.splitlines() if line.startswith(("(a) course", "(b) defaults"))]
    assert len(runs) == 2
    for line in runs:
        samples_s, tokens_s, pad_eff, peak, eval_loss = (float(x) for x in line.split()[-5:])
        assert samples_s > 0 and tokens_s > samples_s and 0 < pad_eff <= 1 and peak > 0 and eval_loss > 0
    assert "batch 1 x accum 8, random" in runs[0] and "batch 8 x accum 1, group_by_length" in runs[1]
    for mode in ("bare base model, one prompt per call", "LoRA (peft wrapper)", "merged LoRA", "batch 8"):
        assert mode in text
    assert "batch 8 gives the same greedy answers as one prompt per call: True" in text
