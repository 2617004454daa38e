"""Compare the course's methods side by side.

    python compare.py                     # trainable-parameter table on the meta device: needs the model's
                                          # config.json and its tokenizer (the text-init row counts the
                                          # tokens of the init text), no weights
    python compare.py --train --dataset data/alpaca_sample_zh.json --max_steps 100
                                          # train every variant, then write report.md / report.json / plots

Unknown flags are passed on to every train.py (e.g. --bf16, --per_device_train_batch_size 4).
"""

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common.errors import UserError, run_cli
from common.lessons import ROOT, VARIANTS, lesson_module
from common.meta_counts import count_table, count_variants
from common.models import DEFAULT_MODEL
from common.train_args import DEFAULT_DATASET

QUESTION = "用一句话解释什么是光合作用。"


# ---------------------------------------------------------------- the measured report


def split_data(dataset: str, eval_ratio: float, seed: int, out_dir: Path) -> tuple[Path, Path]:
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


def train_variant(variant, index, total, cmd_args, train_file, eval_file, run_dir, passthrough) -> dict:
    """Run the lesson's train.py in its own process (so peak memory is its own) and collect its figures."""
    spec = VARIANTS[variant]
    folder, label, flags = spec.folder, spec.label, spec.flags
    logging_steps = max(1, cmd_args.max_steps // 20)
    cmd = [sys.executable, str(ROOT / folder / "train.py"), "--model_name_or_path", cmd_args.model_name_or_path,
           "--dataset", str(train_file), "--eval_dataset", str(eval_file), "--output_dir", str(run_dir),
           "--max_steps", str(cmd_args.max_steps), "--logging_steps", str(logging_steps), "--save_strategy", "no",
           "--disable_tqdm", "true", "--seed", str(cmd_args.seed), *flags, *passthrough]  # fmt: skip
    start = time.time()
    counts, tail, logged = None, [], 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # live progress
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            tail = (tail + [line])[-30:]
            if line.startswith("trainable params:"):
                counts = [int(x.split(":")[1].replace(",", "")) for x in line.split("||")[:2]]
            elif line.startswith("{'loss'"):
                logged += 1
                loss = float(ast.literal_eval(line.strip())["loss"])
                print(f"[{index}/{total} {variant}] step {min(logged * logging_steps, cmd_args.max_steps)}/"
                      f"{cmd_args.max_steps} loss {loss:.4f} elapsed {time.time() - start:.0f}s",
                      file=sys.stderr, flush=True)  # fmt: skip
    if proc.returncode != 0 or counts is None:
        raise UserError(f"training {variant} failed (exit {proc.returncode}); last output:\n{''.join(tail)}")
    wall = time.time() - start
    metrics = json.loads((run_dir / "all_results.json").read_text())
    state = json.loads((run_dir / "trainer_state.json").read_text())
    curve = [(h["step"], h["loss"]) for h in state["log_history"] if "loss" in h]
    adapter = run_dir / "adapter"
    gpu = "peak_gpu_memory_mb" in metrics
    return dict(
        variant=variant, label=label, lesson=folder, trainable_params=counts[0], all_params=counts[1],
        trainable_percent=round(100 * counts[0] / counts[1], 4),
        adapter_size_bytes=sum(p.stat().st_size for p in adapter.iterdir() if p.suffix == ".safetensors"),
        peak_memory_mb=metrics["peak_gpu_memory_mb"] if gpu else metrics["peak_rss_mb"],
        peak_memory_kind="GPU max allocated" if gpu else "CPU peak RSS",
        train_samples_per_second=metrics["train_samples_per_second"],
        train_tokens_per_second=metrics.get("train_tokens_per_second"),
        wall_time_s=round(wall, 1), final_train_loss=curve[-1][1] if curve else metrics["train_loss"],
        eval_loss=metrics["eval_loss"], eval_perplexity=metrics["eval_perplexity"], loss_curve=curve,
    )  # fmt: skip


def answer(row: dict, run_dir: Path, question: str, max_new_tokens: int) -> str:
    import torch

    from common.generation import generate_answers, generation_kwargs
    from common.infer_args import InferArguments

    model, tokenizer = lesson_module(row["lesson"], "infer").load_for_inference(str(run_dir))
    if torch.cuda.is_available():
        model.to("cuda")
    gen = generation_kwargs(InferArguments(max_new_tokens=max_new_tokens, do_sample=False), tokenizer)
    text = generate_answers(model, tokenizer, [question], gen)[0]
    del model
    return text


def plot(rows: list[dict], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        ax.plot([s for s, _ in r["loss_curve"]], [v for _, v in r["loss_curve"]], label=r["variant"])
    ax.set(xlabel="step", ylabel="train loss", title="Training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curves.png", dpi=100)
    names.append("loss_curves.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        ax.scatter(r["trainable_params"], r["eval_loss"])
        ax.annotate(r["variant"], (r["trainable_params"], r["eval_loss"]), fontsize=8)
    ax.set(xscale="log", xlabel="trainable params (log)", ylabel="eval loss", title="Trainable params vs eval loss")
    fig.tight_layout()
    fig.savefig(out_dir / "params_vs_eval_loss.png", dpi=100)
    names.append("params_vs_eval_loss.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.barh([r["variant"] for r in rows], [r["peak_memory_mb"] for r in rows])
    ax.set(xlabel=f"peak memory, MB ({rows[0]['peak_memory_kind']})", title="Peak memory per variant")
    fig.tight_layout()
    fig.savefig(out_dir / "peak_memory.png", dpi=100)
    names.append("peak_memory.png")
    plt.close("all")
    return names


def human_size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def write_report(rows: list[dict], out_dir: Path, cmd_args, question: str) -> None:
    (out_dir / "report.json").write_text(
        json.dumps(
            {
                "model": cmd_args.model_name_or_path,
                "dataset": cmd_args.dataset,
                "max_steps": cmd_args.max_steps,
                "question": question,
                "variants": rows,
            },
            ensure_ascii=False,
            indent=2,
        )
        + "\n",  # fmt: skip
        encoding="utf-8",
    )
    plots = plot(rows, out_dir)
    lines = [
        "# PEFT methods compared",
        "",
        f"Model `{cmd_args.model_name_or_path}`, data `{cmd_args.dataset}`, {cmd_args.max_steps} steps per variant, "
        f"held-out {cmd_args.eval_ratio:.0%} for eval loss. Peak memory: {rows[0]['peak_memory_kind']}.",
        "",
        "| variant | trainable | % | adapter | peak MB | samples/s | tokens/s | wall s | train loss | eval loss "
        "| perplexity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['trainable_params']:,d} | {r['trainable_percent']:.4f} | "
            f"{human_size(r['adapter_size_bytes'])} | {r['peak_memory_mb']:.0f} | "
            f"{r['train_samples_per_second']:.2f} | {r['train_tokens_per_second']:.0f} | {r['wall_time_s']:.0f} | "
            f"{r['final_train_loss']:.4f} | "
            f"{r['eval_loss']:.4f} | {r['eval_perplexity']:.2f} |"
        )
    lines += ["", f"## Greedy answer to “{question}”", ""]
    # quoted and escaped: a model's answer may hold newlines or control characters
    lines += [f"- **{r['label']}**: `` {json.dumps(r['answer'], ensure_ascii=False)} ``" for r in rows]
    lines += [""] + [f"![{name}]({name})" for name in plots] + [""]
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model_name_or_path",
        default=DEFAULT_MODEL,
        help="hub id or local folder with config.json and the tokenizer (no weights needed)",
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--train", action="store_true", help="train every variant and write a measured report")
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help="data for --train (any lesson format)")
    parser.add_argument("--max_steps", type=int, default=100, help="optimizer steps per variant with --train")
    parser.add_argument("--eval_ratio", type=float, default=0.05, help="share of rows held out for eval loss")
    parser.add_argument("--question", default=QUESTION, help="asked greedily of every trained variant")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", default=str(ROOT / "compare_report"), help="where --train writes")
    args, passthrough = parser.parse_known_args(argv)
    if passthrough and not args.train:
        raise UserError(
            f"unrecognized arguments: {' '.join(passthrough)} (only with --train are extra flags passed on to train.py)"
        )

    if not args.train:
        print(count_table(count_variants(args.model_name_or_path, args.variants)))
        return

    out_dir = Path(args.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output_dir {out_dir} is a file")
    train_file, eval_file = split_data(args.dataset, args.eval_ratio, args.seed, out_dir / "data")
    rows, started = [], time.time()
    for i, variant in enumerate(args.variants, 1):
        print(f"[{i}/{len(args.variants)} {variant}] training ({time.time() - started:.0f}s elapsed)",
              file=sys.stderr, flush=True)  # fmt: skip
        run_dir = out_dir / "runs" / variant
        row = train_variant(variant, i, len(args.variants), args, train_file, eval_file, run_dir, passthrough)
        row["answer"] = answer(row, run_dir, args.question, args.max_new_tokens)
        rows.append(row)
    write_report(rows, out_dir, args, args.question)
    print(f"report written to {out_dir / 'report.md'} ({time.time() - started:.0f}s)", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
