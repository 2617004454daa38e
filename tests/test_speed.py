"""The fast defaults change speed, not the result; the benchmark runs and prints every figure."""

import subprocess
import sys

import pytest
import torch
from helpers import ROOT, initial_model, lesson_module

from common.lessons import LESSONS

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


def layout_of(argv, tmp_path, accelerator: bool, monkeypatch):
    import common.train_args

    monkeypatch.setattr(common.train_args, "_has_torch_accelerator", lambda: accelerator)
    train = lesson_module("05", "train")
    argv = [*argv, "--output_dir", str(tmp_path)]
    _, args = train.parse_train_args(train.ScriptArguments, argv, train.LESSON_DIR, 1e-3)
    return args.per_device_train_batch_size, args.gradient_accumulation_steps, args.train_sampling_strategy


COURSE = ["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "8",
          "--train_sampling_strategy", "random"]  # fmt: skip


@pytest.mark.parametrize(
    "argv, accelerator, expected",
    [
        ([], False, (4, 2, "group_by_length")),  # CPU: measured fastest (bench.py --layouts)
        ([], True, (8, 1, "group_by_length")),
        (["--use_cpu", "true"], True, (4, 2, "group_by_length")),  # the device the run uses, not the machine's
        (COURSE, False, (1, 8, "random")),  # flags given always win
        (COURSE, True, (1, 8, "random")),
        (["--per_device_train_batch_size", "2"], False, (2, 2, "group_by_length")),
        (["--gradient_accumulation_steps=1"], True, (8, 1, "group_by_length")),
    ],
)
def test_default_layout_is_chosen_for_the_device(argv, accelerator, expected, tmp_path, monkeypatch):
    assert layout_of(argv, tmp_path, accelerator, monkeypatch) == expected


def test_every_default_layout_keeps_the_course_batch_of_8():
    from common.train_args import ACCELERATOR_LAYOUT, COURSE_LAYOUT, CPU_LAYOUT

    for layout in (COURSE_LAYOUT, CPU_LAYOUT, ACCELERATOR_LAYOUT):
        assert layout["per_device_train_batch_size"] * layout["gradient_accumulation_steps"] == 8


def test_eval_order_is_fixed_whatever_the_training_order():
    """The Trainer alone would length-group eval rows too when training is grouped by length."""
    from types import SimpleNamespace

    from common.checkpoints import TrainableStateTrainer

    trainer = SimpleNamespace(args=SimpleNamespace(world_size=1, train_sampling_strategy="group_by_length"))
    rows = [{"input_ids": [1] * n} for n in (3, 40, 7, 90, 12, 5, 60, 2, 33, 8)]
    order = list(iter(TrainableStateTrainer._get_eval_sampler(trainer, rows)))
    assert order == list(range(len(rows)))


def test_runs_alternate():
    from measure.repeats import alternated

    assert alternated(["course", "defaults"], 3) == ["course", "defaults"] * 3


def test_figures_are_medians_with_their_range():
    from measure.repeats import spread

    assert spread([3.0, 1.0, 2.0], ".1f") == "2.0 [1.0-3.0]"
    assert spread([1.25], ".2f") == "1.25"


def bench_run(*argv, timeout=300):
    out = subprocess.run([sys.executable, str(ROOT / "bench.py"), *argv], capture_output=True, text=True, cwd=ROOT,
                         timeout=timeout)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def table_rows(text: str, *starts: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(starts)]


@pytest.mark.slow
def test_benchmark_prints_every_figure(tiny_model_dir, tmp_path):
    text = bench_run("--model_name_or_path", str(tiny_model_dir), "--lessons", "05", "--repeats", "1",
                     "--samples", "8", "--eval_rows", "8", "--generation", "--gen_tokens", "4",
                     "--output_dir", str(tmp_path))  # fmt: skip
    for figure in ("samples/s", "whole process s", "% of limit", "pad eff.", "peak MB", "eval loss",
                   "load average (1 min) before:", "load average (1 min) after:", "limit = the best:",
                   "median [lowest-highest] of 1 alternated runs"):  # fmt: skip
        assert figure in text, f"{figure!r} missing:\n{text}"
    course, defaults = table_rows(text, "course: batch 1 x accum 8, random", "defaults: batch 4 x accum 2")
    for line in (course, defaults):
        # one run: samples/s, whole process, % of limit, padding efficiency, peak MB, eval loss
        samples, whole, limit, pad_eff, peak, eval_loss = (float(x) for x in line.split(", ")[-1].split()[1:])
        assert samples > 0 and whole > 0 and 0 < limit <= 100
        assert 0 < pad_eff <= 1 and peak > 0 and eval_loss > 0
    assert "defaults / course:" in text and "x training samples/s" in text
    for mode in ("bare base model, one prompt per call", "LoRA (peft wrapper)", "merged LoRA", "batch 8"):
        assert mode in text
    assert "batch 8 gives the same greedy answers as one prompt per call: True" in text


@pytest.mark.slow
def test_gpu_suite_code_path_runs_on_cpu(tiny_model_dir, tmp_path):
    """Every lesson, both layouts, in one worker process, in the GPU's precision (bf16 weights under bf16
    autocast, which a CPU runs slowly but correctly): the table a GPU run would commit to docs/."""
    text = bench_run("--gpu-suite", "--model_name_or_path", str(tiny_model_dir), "--suite_steps", "2",
                     "--eval_rows", "8", "--output_dir", str(tmp_path),
                     "--bf16", "true", "--dtype", "bfloat16", "--use_cpu", "true")  # fmt: skip
    rows = table_rows(text, "| 0")
    assert len(rows) == 2 * len(LESSONS), text  # every lesson, both layouts
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert "failed" not in row, row
        samples, tokens, tflops, mfu = float(cells[2]), float(cells[3].replace(",", "")), float(cells[5]), cells[6]
        assert samples > 0 and tokens > samples and tflops > 0 and 0 < float(mfu.rstrip("%")) <= 100
    assert "peak = this CPU's measured fp32 matmul limit" in text


@pytest.mark.slow
def test_precision_mode_times_every_mode(tiny_model_dir, tmp_path):
    text = bench_run("--precision", "--model_name_or_path", str(tiny_model_dir), "--repeats", "1",
                     "--output_dir", str(tmp_path))  # fmt: skip
    modes = table_rows(text, "fp32", "bf16 autocast", "bf16 weights", "fp16 autocast")
    assert len(modes) == 4, text
    assert modes[0].endswith("1.00x the fp32 time")
    assert "bf16/fp16 hardware (AVX512-BF16, AMX):" in text and "GFLOP/s" in text


def test_gpu_suite_without_a_gpu_says_how_to_run_its_code_path(tmp_path):
    from types import SimpleNamespace

    from common.errors import UserError
    from measure.gpu_suite import gpu_suite

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="--gpu-suite needs a GPU; to run its code path on this CPU"):
        gpu_suite(SimpleNamespace(model_name_or_path=None), tmp_path, [])


@pytest.mark.slow
def test_step_recorder_times_the_training_batches_and_counts_their_padding(tiny_model_dir, tmp_path):
    """The benchmark's callback, given to a lesson's main() the way every tool gives it: it sees each training
    batch once (none of the eval batches) and its padding, so padding efficiency follows from the batches."""
    from measure.callbacks import StepRecorder

    recorder = StepRecorder()
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(ROOT / "data" / "alpaca_sample_zh.json"),
            "--eval_dataset", str(ROOT / "data" / "demo_zh.json"), "--output_dir", str(tmp_path),
            "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--max_steps", "3",
            "--train_sampling_strategy", "random", "--save_strategy", "no", "--disable_tqdm", "true"]  # fmt: skip
    trainer = lesson_module("05", "train").main(argv, callbacks=[recorder])
    assert len(recorder.batches) == 3 * 2  # steps x accumulation; evaluation added none
    times = [t for t, _, _ in recorder.batches]
    assert times == sorted(times) and recorder.finished > times[-1]
    real = sum(sum(lengths) for _, lengths, _ in recorder.batches)
    assert real == trainer.state.num_input_tokens_seen  # the Trainer's own count of real tokens
    assert all(len(lengths) == 4 and padded >= sum(lengths) for _, lengths, padded in recorder.batches)
    assert any(padded > sum(lengths) for _, lengths, padded in recorder.batches)  # random batches are padded
