"""Run lessons and collect their figures: each run's own results.json, plus step timing where asked.

    run_lessons([{"lesson": "05", "argv": [...], "tag": "lora"}], log)   # -> [figures], in a fresh process

The runs go through the lessons' own `main(argv, callbacks)`, one after another in one fresh process (the GPU
suite puts many runs in one process; compare and bench one each, so each has its own peak memory).
"""

from __future__ import annotations

from pathlib import Path

from .process import run_in_process


def run_lessons(
    runs: list[dict],
    log: Path,
    record_steps: bool = False,
    keep_going: bool = False,
    echo: str | None = None,
    threads: int | None = None,
) -> list[dict]:
    """Each run's figures, in order. keep_going: a failed run gives {"error": ...} and the rest go on."""
    spec = {"runs": runs, "record_steps": record_steps, "keep_going": keep_going}
    return run_in_process("measure.lesson_runs:train_runs", spec, log, echo=echo, threads=threads)


def train_runs(spec: dict) -> list[dict]:
    """In the child: every run of the spec; figures from its results file (and its StepRecorder)."""
    import gc

    import torch

    results = []
    for run in spec["runs"]:
        try:
            results.append(train_one(run, spec["record_steps"]))
        except Exception as exc:  # one lesson's failure must not cost the rest of a rare GPU session
            if not spec["keep_going"]:
                raise
            results.append({"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


def train_one(run: dict, record_steps: bool) -> dict:
    import torch

    from common.lessons import lesson_module
    from common.results import read_results

    from .callbacks import Progress, StepRecorder

    recorder = StepRecorder() if record_steps else None
    callbacks = [Progress(run.get("tag", run["lesson"]))] + ([recorder] if recorder else [])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # several runs may share this process (the GPU suite)
    trainer = lesson_module(run["lesson"], "train").main(run["argv"], callbacks=callbacks)
    figures = read_results(trainer.args.output_dir)
    if recorder:
        figures.update(step_figures(trainer, recorder))
    return figures


def step_figures(trainer, recorder) -> dict:
    """Speed from the second optimizer step on (the first pays for allocations and kernel choice), padding
    efficiency over all steps, and useful FLOP/s (measure.flops)."""
    from .flops import row_flops

    with trainer.accelerator.autocast():  # the probe pass in the run's own precision (bf16 weights, fp32 biases)
        flops = row_flops(trainer.model)
    batches, accumulation = recorder.batches, trainer.args.gradient_accumulation_steps
    steady = batches[accumulation:] if len(batches) > accumulation else batches
    steady_s = recorder.finished - steady[0][0]
    steady_lengths = [n for _, lengths, _ in steady for n in lengths]
    return {
        "steady_samples_per_s": len(steady_lengths) / steady_s,
        "steady_tokens_per_s": sum(steady_lengths) / steady_s,
        "flops_per_s": flops.rows(steady_lengths) / steady_s,
        "padding_efficiency": sum(sum(lengths) for _, lengths, _ in batches) / sum(p for _, _, p in batches),
    }
