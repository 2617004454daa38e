"""Compare the course's methods side by side.

    python compare.py                     # trainable-parameter table on the meta device: needs the model's
                                          # config.json and its tokenizer (the text-init row counts the
                                          # tokens of the init text), no weights
    python compare.py --train --dataset data/alpaca_sample_zh.json --max_steps 100
                                          # train every variant, then write report.md / report.json / plots
    OMP_NUM_THREADS=1 python compare.py --train --model_name_or_path models/mini-bloom-zh \
        --dataset data/world/qa_train.jsonl --eval_dataset data/world/qa_test.jsonl \
        --held_out_text data/world/bios_held_out.jsonl --lr_factors 0.3 1 3 10 30 --max_steps 300 --jobs 2 \
        --output_dir docs/mini_world_report --per_device_train_batch_size 8 --gradient_accumulation_steps 1
                                          # the mini world: a learning-rate sweep scored on held-out people

Unknown flags are passed on to every train.py (e.g. --bf16, --per_device_train_batch_size 4).
"""

import argparse
import ast
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.errors import UserError, run_cli
from common.lessons import ROOT, VARIANTS, lesson_module
from common.models import DEFAULT_MODEL
from common.train_args import DEFAULT_DATASET
from measure.counts import count_table, count_variants

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


RUN_RECORD = "compare_run.json"  # in each run folder: the command and its figures, so a rerun can skip it


def train_command(variant, cmd_args, train_file, eval_file, run_dir, passthrough, lr=None) -> list[str]:
    folder, flags = VARIANTS[variant].folder, list(VARIANTS[variant].flags)
    if lr is not None:
        flags = [*flags, "--learning_rate", str(lr)]
    return [sys.executable, str(ROOT / folder / "train.py"), "--model_name_or_path", cmd_args.model_name_or_path,
            "--dataset", str(train_file), "--eval_dataset", str(eval_file), "--output_dir", str(run_dir),
            "--max_steps", str(cmd_args.max_steps), "--logging_steps", str(max(1, cmd_args.max_steps // 20)),
            "--save_strategy", "no", "--disable_tqdm", "true", "--seed", str(cmd_args.seed), *flags,
            *passthrough]  # fmt: skip


def train_variant(variant, index, total, cmd_args, train_file, eval_file, run_dir, passthrough, lr=None) -> dict:
    """Run the lesson's train.py in its own process (so peak memory is its own) and collect its figures.

    A run folder whose record holds the same command is reused: an interrupted or extended sweep trains only
    what is missing."""
    folder, label = VARIANTS[variant].folder, VARIANTS[variant].label
    cmd = train_command(variant, cmd_args, train_file, eval_file, run_dir, passthrough, lr)
    logging_steps = max(1, cmd_args.max_steps // 20)
    record = run_dir / RUN_RECORD
    key = ["<run_dir>" if a == str(run_dir) else a for a in cmd[1:]]  # the folder may move; the run is the same
    if record.is_file() and (run_dir / "adapter").is_dir():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved["command"] == key:
            print(f"[{index}/{total} {variant}] reusing the finished run in {run_dir}", file=sys.stderr, flush=True)
            return saved["figures"]
    start = time.time()
    counts, tail, logged = None, [], 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # live progress
    if cmd_args.jobs > 1:  # torch's default threads in parallel runs fight over the cores (10-30x slower)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cmd_args.jobs)))
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
    figures = dict(
        variant=variant, label=label, lesson=folder, learning_rate=lr, trainable_params=counts[0],
        all_params=counts[1],
        trainable_percent=round(100 * counts[0] / counts[1], 4),
        adapter_size_bytes=sum(p.stat().st_size for p in adapter.iterdir() if p.suffix == ".safetensors"),
        peak_memory_mb=metrics["peak_gpu_memory_mb"] if gpu else metrics["peak_rss_mb"],
        peak_memory_kind="GPU max allocated" if gpu else "CPU peak RSS",
        train_samples_per_second=metrics["train_samples_per_second"],
        train_tokens_per_second=metrics.get("train_tokens_per_second"),
        wall_time_s=round(wall, 1), final_train_loss=curve[-1][1] if curve else metrics["train_loss"],
        eval_loss=metrics["eval_loss"], eval_perplexity=metrics["eval_perplexity"], loss_curve=curve,
    )  # fmt: skip
    record.write_text(json.dumps({"command": key, "figures": figures}, ensure_ascii=False), encoding="utf-8")
    return figures


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


# ---------------------------------------------------------------- answers on held-out questions


def score_model(model, tokenizer, questions: list[dict], held_out_text: list[str] | None) -> dict:
    """Greedy answers to every held-out question, scored; plus the LM loss on held-out text (for forgetting)."""
    from measure.scoring import lm_loss, score_answers
    from mini_world.probe import answer_questions

    answers = answer_questions(model, tokenizer, questions)
    scores = score_answers(answers, [q["output"] for q in questions])
    if held_out_text:
        scores["lm_loss"] = lm_loss(model, tokenizer, held_out_text)
    return {**scores, "answers": answers}


def score_base(model_name_or_path: str, questions: list[dict], held_out_text: list[str] | None) -> dict:
    from common.models import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(model_name_or_path)
    return score_model(load_base_model(model_name_or_path).eval(), tokenizer, questions, held_out_text)


def score_variant(row: dict, run_dir: Path, questions: list[dict], held_out_text: list[str] | None) -> dict:
    model, tokenizer = lesson_module(row["lesson"], "infer").load_for_inference(str(run_dir))
    return score_model(model.eval(), tokenizer, questions, held_out_text)


def best_runs(rows: list[dict]) -> list[dict]:
    """Each variant's run with the highest exact match (ties: the lower learning rate), best variant first."""
    best = {}
    for r in rows:
        key = (r["exact_match"], -r["learning_rate"])
        if r["variant"] not in best or key > (best[r["variant"]]["exact_match"], -best[r["variant"]]["learning_rate"]):
            best[r["variant"]] = r
    return sorted(best.values(), key=lambda r: -r["exact_match"])


def plot_answers(rows: list[dict], base: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = best_runs(rows)
    names = []
    axes = (("trainable_params", "trainable parameters (log)", "em_vs_params.png"),
            ("wall_time_s", "wall time of the training process, s (log)", "em_vs_time.png"))  # fmt: skip
    for key, xlabel, name in axes:
        fig, ax = plt.subplots(figsize=(8, 5))
        for r in best:
            ax.scatter(r[key], 100 * r["exact_match"])
            ax.annotate(r["variant"], (r[key], 100 * r["exact_match"]), fontsize=8)
        ax.axhline(100 * base["exact_match"], color="gray", linestyle="--", label="base model")
        ax.set(xscale="log", xlabel=xlabel, ylabel="held-out exact match, %",
               title="Best learning rate per variant")  # fmt: skip
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        names.append(name)
    fig, ax = plt.subplots(figsize=(8, 5))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        runs = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["learning_rate"])
        ax.plot([r["learning_rate"] for r in runs], [100 * r["exact_match"] for r in runs], marker="o", label=variant)
    ax.set(xscale="log", xlabel="learning rate (log)", ylabel="held-out exact match, %", title="Learning-rate sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "lr_sweep.png", dpi=100)
    names.append("lr_sweep.png")
    plt.close("all")
    return names


def write_answer_report(rows: list[dict], base: dict, out_dir: Path, cmd_args, passthrough: list[str]) -> None:
    import torch

    (out_dir / "report.json").write_text(
        json.dumps({"model": cmd_args.model_name_or_path, "dataset": cmd_args.dataset,
                    "eval_dataset": cmd_args.eval_dataset, "held_out_text": cmd_args.held_out_text,
                    "max_steps": cmd_args.max_steps, "lr_factors": cmd_args.lr_factors, "extra_flags": passthrough,
                    "torch_threads": torch.get_num_threads(),
                    # answers are left out: rerun the command to see them (they would make the file ~1 MB)
                    "base": {k: v for k, v in base.items() if k != "answers"},
                    "runs": [{k: v for k, v in r.items() if k != "answers"} for r in rows]},
                   ensure_ascii=False, indent=1) + "\n", encoding="utf-8")  # fmt: skip
    plots = plot_answers(rows, base, out_dir)
    forgetting = cmd_args.held_out_text is not None

    def f(r):
        return f" {r['lm_loss'] - base['lm_loss']:+.3f} |" if forgetting else ""

    lines = [
        "# PEFT methods compared on the mini world",
        "",
        f"Base model `{cmd_args.model_name_or_path}`; training data `{cmd_args.dataset}`; held-out questions "
        f"`{cmd_args.eval_dataset}` ({len(base['answers'])} questions). {cmd_args.max_steps} optimizer steps per run, "
        f"each lesson's default learning rate times {', '.join(map(str, cmd_args.lr_factors))}"
        + (f", extra flags `{' '.join(passthrough)}`" if passthrough else "") + ". "
        "Greedy answers; exact match after stripping; ROUGE-L and BLEU-4 on characters. "
        + ("Forgetting: the adapter's LM loss on held-out biographies minus the base model's "
           f"({base['lm_loss']:.3f}). " if forgetting else "")
        + f"Train s is the wall time of each whole training process, {cmd_args.jobs} at a time on "
        f"{os.cpu_count()} CPU cores with {os.environ.get('OMP_NUM_THREADS', torch.get_num_threads())} torch "
        f"thread(s) each, on a machine that also ran other work (1-minute load {os.getloadavg()[0]:.1f} when the "
        "report was written): compare times only within this report.",
        "",
        f"Command: `python compare.py {shlex.join(cmd_args.argv)}`",
        "",
        f"Base model without training: exact match {base['exact_match']:.1%}, ROUGE-L {base['rouge_l']:.1%}.",
        "",
        "## Best learning rate per variant",
        "",
        "The rate is picked on the same held-out questions it is scored on (no separate validation split), so the "
        "best figure is slightly optimistic; the full sweep below shows how much it depends on the rate.",
        "",
        "| variant | learning rate | exact match | ROUGE-L | BLEU-4 |" + (" forgetting |" if forgetting else "")
        + " trainable params | saved | peak MB | train s |",
        "|---|---:|---:|---:|---:|" + ("---:|" if forgetting else "") + "---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in best_runs(rows):
        lines.append(f"| {r['label']} | {r['learning_rate']:.3g} | {r['exact_match']:.1%} | {r['rouge_l']:.1%} | "
                     f"{r['bleu4']:.1%} |{f(r)} {r['trainable_params']:,d} | {human_size(r['adapter_size_bytes'])} | "
                     f"{r['peak_memory_mb']:.0f} | {r['wall_time_s']:.0f} |")  # fmt: skip
    lines += ["", "## Every run", "",
              "| variant | learning rate | exact match | ROUGE-L |" + (" forgetting |" if forgetting else "")
              + " eval loss | final train loss |",
              "|---|---:|---:|---:|" + ("---:|" if forgetting else "") + "---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['label']} | {r['learning_rate']:.3g} | {r['exact_match']:.1%} | {r['rouge_l']:.1%} |"
                     f"{f(r)} {r['eval_loss']:.3f} | {r['final_train_loss']:.3f} |")  # fmt: skip
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
    parser.add_argument(
        "--eval_dataset",
        help="held-out questions with reference answers: every trained variant answers them greedily and is "
        "scored (exact match, ROUGE-L, BLEU-4); without it a share of --dataset is held out for eval loss only",
    )
    parser.add_argument("--held_out_text", help="JSON lines with a 'text' field: LM loss on it measures forgetting")
    parser.add_argument(
        "--lr_factors", nargs="+", type=float, default=[1.0],
        help="train each variant at its lesson's default learning rate times each factor (a sweep)",
    )  # fmt: skip
    parser.add_argument("--max_steps", type=int, default=100, help="optimizer steps per variant with --train")
    parser.add_argument(
        "--jobs", type=int, default=1,
        help="training processes at a time (each gets cores / jobs threads); answers are scored afterwards, one "
        "at a time",
    )  # fmt: skip
    parser.add_argument("--eval_ratio", type=float, default=0.05, help="share of rows held out for eval loss")
    parser.add_argument("--question", default=QUESTION, help="asked greedily of every trained variant")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", default=str(ROOT / "compare_report"), help="where --train writes")
    args, passthrough = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if passthrough and not args.train:
        raise UserError(
            f"unrecognized arguments: {' '.join(passthrough)} (only with --train are extra flags passed on to train.py)"
        )
    if any(f <= 0 for f in args.lr_factors):
        raise UserError("--lr_factors must be positive")

    if not args.train:
        print(count_table(count_variants(args.model_name_or_path, args.variants)))
        return

    out_dir = Path(args.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output_dir {out_dir} is a file")
    if args.eval_dataset:
        from mini_world.generate import read_jsonl

        for path in filter(None, (args.eval_dataset, args.held_out_text)):
            if not Path(path).is_file():
                raise UserError(f"{path}: no such file")
        train_file, eval_file = Path(args.dataset), Path(args.eval_dataset)
        questions = read_jsonl(eval_file)
        held_out = [r["text"] for r in read_jsonl(Path(args.held_out_text))] if args.held_out_text else None
        base = score_base(args.model_name_or_path, questions, held_out)
        print(f"base model: exact match {base['exact_match']:.1%}", file=sys.stderr, flush=True)
    else:
        train_file, eval_file = split_data(args.dataset, args.eval_ratio, args.seed, out_dir / "data")
    default_lr = {v: lesson_module(VARIANTS[v].lesson, "train").LEARNING_RATE for v in args.variants}
    jobs = [(v, default_lr[v] * f) for v in args.variants for f in args.lr_factors]
    started = time.time()

    def run(job):
        i, (variant, lr) = job
        tag = f"{variant}-lr{lr:.3g}" if len(args.lr_factors) > 1 else variant
        run_dir = out_dir / "runs" / tag
        print(f"[{i}/{len(jobs)} {tag}] starting ({time.time() - started:.0f}s elapsed)", file=sys.stderr, flush=True)
        return run_dir, train_variant(variant, i, len(jobs), args, train_file, eval_file, run_dir, passthrough, lr)

    if args.jobs < 1:
        raise UserError("--jobs must be at least 1")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        trained = list(pool.map(run, enumerate(jobs, 1)))
    rows = []
    for run_dir, row in trained:
        if args.eval_dataset:
            row.update(score_variant(row, run_dir, questions, held_out))
            print(f"{run_dir.name}: exact match {row['exact_match']:.1%}", file=sys.stderr, flush=True)
        else:
            row["answer"] = answer(row, run_dir, args.question, args.max_new_tokens)
        rows.append(row)
    if args.eval_dataset:
        write_answer_report(rows, base, out_dir, args, passthrough)
    else:
        write_report(rows, out_dir, args, args.question)
    print(f"report written to {out_dir / 'report.md'} ({time.time() - started:.0f}s)", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
