"""Compare the course's methods side by side.

    python compare.py                     # trainable-parameter table on the meta device: needs the model's
                                          # config.json and its tokenizer (the text-init row counts the
                                          # tokens of the init text), no weights
    python compare.py --train --dataset data/alpaca_sample_zh.json --max_steps 100
                                          # train every variant, then write report.md / report.json / plots
    OMP_NUM_THREADS=1 python compare.py --train --model_name_or_path models/mini-bloom-zh \
        --dataset data/world/qa_train.jsonl --eval_dataset data/world/qa_test.jsonl \
        --held_out_text data/world/bios_held_out.jsonl --lr_factors 0.3 1 3 10 30 --max_steps 300 --jobs 2 \
        --output_dir mini_world_sweep --per_device_train_batch_size 8 --gradient_accumulation_steps 1
                                          # the mini world: a quick learning-rate sweep scored on held-out
                                          # people (one seed, rates judged on the test questions; the
                                          # course's comparison is experiment.py)

Unknown flags are passed on to every train.py (e.g. --bf16, --per_device_train_batch_size 4). Each run writes
its figures to its results file (results.json), which is what the report reads. The code lives in the measure/
package; this file parses the command line and dispatches.
"""

import argparse
import sys
import time
from pathlib import Path

from common.errors import UserError, run_cli
from common.lessons import ROOT, VARIANTS
from common.models import DEFAULT_MODEL
from common.train_args import DEFAULT_DATASET
from measure.report import QUESTION


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add(
        "--model_name_or_path",
        default=DEFAULT_MODEL,
        help="hub id or local folder with config.json and the tokenizer (no weights needed)",
    )
    add("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    add("--train", action="store_true", help="train every variant and write a measured report")
    add("--dataset", default=DEFAULT_DATASET, help="data for --train (any lesson format)")
    add(
        "--eval_dataset",
        help="held-out questions with reference answers: every trained variant answers them "
        "greedily and is scored (exact match, ROUGE-L, BLEU-4); without it a share of --dataset is held out for "
        "eval loss only",
    )
    add("--held_out_text", help="JSON lines with a 'text' field: LM loss on it measures forgetting")
    add(
        "--lr_factors",
        nargs="+",
        type=float,
        default=[1.0],
        help="train each variant at its lesson's default learning rate times each factor (a sweep)",
    )
    add("--max_steps", type=int, default=100, help="optimizer steps per variant with --train")
    add(
        "--jobs",
        type=int,
        default=1,
        help="training processes at a time (each gets cores / jobs threads); "
        "answers are scored afterwards, one at a time",
    )
    add("--eval_ratio", type=float, default=0.05, help="share of rows held out for eval loss")
    add("--question", default=QUESTION, help="asked greedily of every trained variant")
    add("--max_new_tokens", type=int, default=64)
    add("--seed", type=int, default=42)
    add("--output_dir", default=str(ROOT / "compare_report"), help="where --train writes")
    args, passthrough = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if passthrough and not args.train:
        raise UserError(
            f"unrecognized arguments: {' '.join(passthrough)} (only with --train are extra flags passed on to train.py)"
        )
    if any(f <= 0 for f in args.lr_factors):
        raise UserError("--lr_factors must be positive")
    if args.jobs < 1:
        raise UserError("--jobs must be at least 1")
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise UserError(f"--output_dir {args.output_dir} is a file")
    for path in filter(None, (args.eval_dataset, args.held_out_text)):
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file")
    return args, passthrough  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args, passthrough = parse(argv)
    if not args.train:
        from measure.counts import count_table, count_variants

        print(count_table(count_variants(args.model_name_or_path, args.variants)))
        return
    from measure import report, sweep
    from measure.scoring import score_model

    out_dir, started = Path(args.output_dir), time.time()
    if args.eval_dataset:  # answers to held-out questions, scored; the base model first
        from common.models import load_base_model, load_tokenizer
        from mini_world.generate import read_jsonl

        train_file, eval_file = Path(args.dataset), Path(args.eval_dataset)
        questions = read_jsonl(eval_file)
        held_out = [r["text"] for r in read_jsonl(Path(args.held_out_text))] if args.held_out_text else None
        base_model = load_base_model(args.model_name_or_path)
        base = score_model(base_model, load_tokenizer(args.model_name_or_path), questions, held_out)
        print(f"base model: exact match {base['exact_match']:.1%}", file=sys.stderr, flush=True)
    else:  # a share of the data held out for eval loss, and one question
        train_file, eval_file = sweep.split_data(args.dataset, args.eval_ratio, args.seed, out_dir / "data")
    rows = []
    for run_dir, row in sweep.run_sweep(args, train_file, eval_file, out_dir, passthrough):
        if args.eval_dataset:
            row.update(score_model(*sweep.load_run(row, run_dir), questions, held_out))
            print(f"{run_dir.name}: exact match {row['exact_match']:.1%}", file=sys.stderr, flush=True)
        else:
            row["answer"] = report.answer(row, run_dir, args.question, args.max_new_tokens)
        rows.append(row)
    if args.eval_dataset:
        report.write_answer_report(rows, base, out_dir, args, passthrough)
    else:
        report.write_report(rows, out_dir, args, args.question)
    print(f"report written to {out_dir / 'report.md'} ({time.time() - started:.0f}s)", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
