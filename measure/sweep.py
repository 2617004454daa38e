"""compare.py --train: every variant trained (times each learning-rate factor), each run in its own process, its
figures read from its results file; a run folder that already holds the same finished run is reused."""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.errors import UserError
from common.lessons import VARIANTS, lesson_module
from common.results import loss_curve

from .lesson_runs import run_lessons

RUN_RECORD = "compare_run.json"  # in each run folder: the run and its figures, so a rerun can skip it


def split_data(dataset: str, eval_ratio: float, seed: int, out_dir: Path) -> tuple[Path, Path]:
    """A shuffled dataset cut into train.jsonl and eval.jsonl (`eval_ratio` of the rows)."""
    from common.data import load_instruction_data

    ds = load_instruction_data(dataset).shuffle(seed=seed)
    n_eval = max(1, int(len(ds) * eval_ratio))
    if n_eval >= len(ds):
        raise UserError(f"--eval_ratio {eval_ratio} leaves no training rows out of {len(ds)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    train_file, eval_file = out_dir / "train.jsonl", out_dir / "eval.jsonl"
    ds.select(range(n_eval, len(ds))).to_json(str(train_file), force_ascii=False)
    ds.select(range(n_eval)).to_json(str(eval_file), force_ascii=False)
    return train_file, eval_file


def train_argv(variant, args, train_file, eval_file, run_dir, passthrough, lr=None) -> list[str]:
    flags = [*VARIANTS[variant].flags, *(["--learning_rate", str(lr)] if lr is not None else [])]
    return ["--model_name_or_path", args.model_name_or_path, "--dataset", str(train_file),
            "--eval_dataset", str(eval_file), "--output_dir", str(run_dir), "--max_steps", str(args.max_steps),
            "--logging_steps", str(max(1, args.max_steps // 20)), "--save_strategy", "no", "--disable_tqdm", "true",
            "--seed", str(args.seed), *flags, *passthrough]  # fmt: skip


def train_variant(variant: str, tag: str, args, train_file, eval_file, run_dir: Path, passthrough, lr=None) -> dict:
    """Train one variant in its own process; its figures, from the run's results file."""
    spec = VARIANTS[variant]
    argv = train_argv(variant, args, train_file, eval_file, run_dir, passthrough, lr)
    record = run_dir / RUN_RECORD
    key = [spec.lesson, *("<run_dir>" if a == str(run_dir) else a for a in argv)]  # the folder may move
    if record.is_file() and (run_dir / "adapter").is_dir():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved["command"] == key:
            print(f"[{tag}] reusing the finished run in {run_dir}", file=sys.stderr, flush=True)
            return saved["figures"]
    start = time.time()
    # parallel runs with torch's default threads fight over the cores (10-30x slower)
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    results = run_lessons([{"lesson": spec.lesson, "argv": argv, "tag": tag}], run_dir / "train.log",
                          echo=f"[{tag}]", threads=threads)[0]  # fmt: skip
    curve = loss_curve(results)
    adapter = run_dir / "adapter"
    figures = dict(
        variant=variant, label=spec.label, lesson=spec.folder, learning_rate=lr,
        trainable_params=results["trainable_params"], all_params=results["all_params"],
        trainable_percent=round(100 * results["trainable_params"] / results["all_params"], 4),
        adapter_size_bytes=sum(p.stat().st_size for p in adapter.iterdir() if p.suffix == ".safetensors"),
        peak_memory_mb=results["peak_memory_mb"], peak_memory_kind=results["peak_memory_kind"],
        train_samples_per_second=results["train_samples_per_second"],
        train_tokens_per_second=results["train_tokens_per_second"],
        wall_time_s=round(time.time() - start, 1), final_train_loss=curve[-1][1] if curve else results["train_loss"],
        eval_loss=results["eval_loss"], eval_perplexity=results["eval_perplexity"], loss_curve=curve,
    )  # fmt: skip
    record.write_text(json.dumps({"command": key, "figures": figures}, ensure_ascii=False), encoding="utf-8")
    return figures


def run_sweep(args, train_file: Path, eval_file: Path, out_dir: Path, passthrough: list[str]) -> list[tuple]:
    """(run folder, figures) for every variant times every learning-rate factor, `args.jobs` at a time."""
    default_lr = {v: lesson_module(VARIANTS[v].lesson, "train").LEARNING_RATE for v in args.variants}
    jobs = [(v, default_lr[v] * f) for v in args.variants for f in args.lr_factors]
    started = time.time()

    def run(job):
        i, (variant, lr) = job
        name = f"{variant}-lr{lr:.3g}" if len(args.lr_factors) > 1 else variant
        tag = f"{i}/{len(jobs)} {name}"
        print(f"[{tag}] starting ({time.time() - started:.0f}s elapsed)", file=sys.stderr, flush=True)
        run_dir = out_dir / "runs" / name
        return run_dir, train_variant(variant, tag, args, train_file, eval_file, run_dir, passthrough, lr)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(run, enumerate(jobs, 1)))


def load_run(row: dict, run_dir: Path):
    """(model, tokenizer) of a finished run, through its lesson's own infer.py."""
    return lesson_module(row["lesson"], "infer").load_for_inference(str(run_dir))


def best_runs(rows: list[dict]) -> list[dict]:
    """Each variant's run with the highest exact match (ties: the lower learning rate), best variant first."""
    best = {}
    for r in rows:
        key = (r["exact_match"], -r["learning_rate"])
        if r["variant"] not in best or key > (best[r["variant"]]["exact_match"], -best[r["variant"]]["learning_rate"]):
            best[r["variant"]] = r
    return sorted(best.values(), key=lambda r: -r["exact_match"])
