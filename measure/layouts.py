"""Batch layouts: the course's 1 x 8 against fewer, larger batches of similar length, each run in its own process
on the same rows, the runs alternated; the table of their medians."""

import sys
import time
from pathlib import Path

from common.lessons import LESSONS
from common.train_args import COURSE_LAYOUT, default_layout

from .lesson_runs import run_lessons
from .machine import measure_limit
from .repeats import alternated, median, spread
from .rows import COURSE_ROWS, ROW_TOKENS, order_efficiency


def layout_flags(layout: dict) -> list[str]:
    return [x for key, value in layout.items() for x in (f"--{key}", str(value))]


def layout_label(layout: dict) -> str:
    return (
        f"batch {layout['per_device_train_batch_size']} x accum {layout['gradient_accumulation_steps']}, "
        f"{layout['train_sampling_strategy']}"
    )


def grouped(batch: int) -> dict:
    return dict(
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=EFFECTIVE_BATCH // batch,
        train_sampling_strategy="group_by_length",
    )


EFFECTIVE_BATCH = 8
# the layouts `--layouts` compares: the course's, and 8 rows per step as fewer, larger batches of similar length
CANDIDATE_LAYOUTS = {
    "course": COURSE_LAYOUT,
    "2x4 grouped": grouped(2),
    "4x2 grouped": grouped(4),
    "8x1 grouped": grouped(8),
    "8x1 random": {**grouped(8), "train_sampling_strategy": "random"},
}
LAYOUT_FLAGS = (
    "--per_device_train_batch_size",
    "--gradient_accumulation_steps",
    "--train_sampling_strategy",
    "--group_by_length",
    "--max_steps",
    "--num_train_epochs",
)


def training_argv(seed: int, model: str, train_file: Path, eval_file: Path, extra: list[str], steps: int) -> list[str]:
    """A benchmark run's train.py flags: the same rows and steps for every layout, no checkpoints."""
    return ["--model_name_or_path", model, "--dataset", str(train_file), "--eval_dataset", str(eval_file),
            "--max_steps", str(steps), "--save_strategy", "no", "--logging_steps", "1000", "--disable_tqdm", "true",
            "--report_to", "none", "--seed", str(seed), *extra]  # fmt: skip


def run_alternated(lesson: str, layouts: dict[str, list[str]], argv: list[str], work: Path, repeats: int) -> dict:
    """name -> the figures of each repeat (results.json, step timing, whole-process time), the runs alternated."""
    folder = LESSONS[lesson]
    runs = {name: [] for name in layouts}
    order = alternated(list(layouts), repeats)
    for i, name in enumerate(order, 1):
        print(f"[bench] {folder}: {name} ({i}/{len(order)}) ...", file=sys.stderr, flush=True)
        out = work / folder / name.replace(" ", "_") / str(len(runs[name]))
        run = {"lesson": lesson, "argv": [*argv, *layouts[name], "--output_dir", str(out)], "tag": name}
        start = time.perf_counter()
        figures = run_lessons([run], out / "run.log", record_steps=True)[0]
        runs[name].append({**figures, "process_s": time.perf_counter() - start})  # the whole process
    return runs


def print_runs(folder: str, runs: dict[str, list[dict]], limit: float, reference: str = "course") -> None:
    repeats = next(iter(runs.values()))
    first, n = repeats[0], len(repeats)
    print(
        f"\n{folder} (learning rate {first['learning_rate']:g} in every run; median [lowest-highest] of {n} "
        f"alternated runs; peak memory = {first['peak_memory_kind']})"
    )
    print(
        f"{'layout':<50} {'samples/s':>19} {'whole process s':>19} {'% of limit':>16} {'pad eff.':>8} "
        f"{'peak MB':>7} {'eval loss':>9}"
    )
    for name, results in runs.items():
        label = f"{name}: {layout_label(results[0])}"  # the layout the run itself recorded
        print(
            f"{label:<50} {spread([x['train_samples_per_second'] for x in results], '.2f'):>19} "
            f"{spread([x['process_s'] for x in results], '.1f'):>19} "
            f"{spread([100 * x['flops_per_s'] / limit for x in results], '.1f'):>16} "
            f"{median([x['padding_efficiency'] for x in results]):>8.3f} "
            f"{median([x['peak_memory_mb'] for x in results]):>7.0f} {median([x['eval_loss'] for x in results]):>9.4f}"
        )
    ref = runs[reference]
    for name, results in runs.items():
        if name == reference:
            continue
        speed = median([x["train_samples_per_second"] for x in results]) / median(
            [x["train_samples_per_second"] for x in ref]
        )
        whole = median([x["process_s"] for x in ref]) / median([x["process_s"] for x in results])
        loss = 100 * (median([x["eval_loss"] for x in results]) / median([x["eval_loss"] for x in ref]) - 1)
        print(
            f"{name} / {reference}: {speed:.2f}x training samples/s, {whole:.2f}x whole process, eval loss {loss:+.2f}%"
        )


def compare_layouts(args, model: str, train_file: Path, eval_file: Path, data_label: str, extra: list[str], work: Path):
    """bench.py's main mode: each lesson's runs in every compared layout, alternated; a table per lesson."""
    print(
        f"data: {data_label}; {args.samples} samples per run = {args.samples // EFFECTIVE_BATCH} "
        f"optimizer step(s) of {EFFECTIVE_BATCH}; extra flags for every run: {' '.join(extra) or 'none'}"
    )
    if not args.dataset:
        for n in (args.samples, COURSE_ROWS):
            eff = order_efficiency(n, args.seed, (4, EFFECTIVE_BATCH))
            print(
                f"padding efficiency on {n:,d} rows of {ROW_TOKENS[0]}-{ROW_TOKENS[1]} tokens (batch order "
                "only, no training): " + "; ".join(f"batches of {b}, {order} {e:.3f}" for (b, order), e in eff.items())
            )
    print(f"default layout on this device: {layout_label(default_layout())} (common/train_args.py)")
    limit = measure_limit(model)
    if args.layouts:
        compared = {name: layout_flags(layout) for name, layout in CANDIDATE_LAYOUTS.items()}
    else:
        compared = {"course": layout_flags(COURSE_LAYOUT), "defaults": []}
    argv = training_argv(args.seed, model, train_file, eval_file, extra, args.samples // EFFECTIVE_BATCH)
    for lesson in args.lessons:
        print_runs(LESSONS[lesson], run_alternated(lesson, compared, argv, work, args.repeats), limit)
