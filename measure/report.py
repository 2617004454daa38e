"""compare.py's reports: report.json (every figure) and report.md (tables, answers, plots) in the output folder."""

import json
import os
import shlex
from pathlib import Path

from .plots import plot_answers, plot_training
from .sweep import best_runs, load_run

QUESTION = "用一句话解释什么是光合作用。"


def answer(row: dict, run_dir: Path, question: str, max_new_tokens: int) -> str:
    """A finished run's greedy answer to one question."""
    import torch

    from common.generation import generate_answers, generation_kwargs
    from common.infer_args import InferArguments

    model, tokenizer = load_run(row, run_dir)
    if torch.cuda.is_available():
        model.to("cuda")
    gen = generation_kwargs(InferArguments(max_new_tokens=max_new_tokens, do_sample=False), tokenizer)
    return generate_answers(model, tokenizer, [question], gen)[0]


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
    plots = plot_training(rows, out_dir)
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
