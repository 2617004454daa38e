"""The rows a benchmark trains on: real-length rows built from the sample data (or a dataset as it is), and the
padding efficiency of a batch order."""

import json
import random
from pathlib import Path

from common.errors import UserError
from common.lessons import ROOT

COURSE_ROWS = 26_858  # rows in older public copies of the course's alpaca_data_zh (its current one: 48,818)
ROW_TOKENS = (60, 250)  # most alpaca-zh rows under bloom-1b4-zh's tokenizer (measured for this project)


def real_length_rows(tokenizer, n_rows: int, sources: list[dict], seed: int) -> list[dict]:
    """Rows whose tokenised length is drawn uniformly from ROW_TOKENS, built from short source rows.

    Each row keeps one source row's instruction and input; its answer is that row's answer followed by the
    answers of the next source rows, cut at the last character that keeps the row within its drawn length.
    """
    from common.course_template import build_prompt

    def length(prompt: str, answer: str) -> int:  # as tokenize_dataset counts it: prompt + answer + EOS
        return len(tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]) + 1

    rng = random.Random(seed)
    rows = []
    for i in range(n_rows):
        target = rng.randint(*ROW_TOKENS)
        src = sources[i % len(sources)]
        prompt = build_prompt(src["instruction"], src.get("input") or "")
        answer, j = src["output"], i + 1
        while length(prompt, answer) < target:
            answer += "\n" + sources[j % len(sources)]["output"]
            j += 1
        lo, hi = 1, len(answer)  # the longest prefix of the answer that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if length(prompt, answer[:mid]) <= target else (lo, mid - 1)
        rows.append({"instruction": src["instruction"], "input": src.get("input") or "", "output": answer[:lo]})
    return rows


def write_rows(args, tokenizer, out_dir: Path) -> tuple[Path, Path, str]:
    """Train and held-out files, from disjoint source rows; and a one-line description of them."""
    from common.data import load_instruction_data

    source = args.dataset or str(ROOT / "data" / "alpaca_sample_zh.json")
    rows = load_instruction_data(source).shuffle(seed=args.seed).to_list()
    n_eval_sources = max(1, len(rows) // 8)
    eval_src, train_src = rows[:n_eval_sources], rows[n_eval_sources:]
    if args.dataset:  # real rows, as they are
        if len(train_src) < args.samples:
            raise UserError(f"--dataset {args.dataset}: {len(train_src)} training rows, --samples {args.samples}")
        train, held_out = train_src[: args.samples], eval_src[: args.eval_rows]
        what = f"rows of {args.dataset}"
    else:
        train = real_length_rows(tokenizer, args.samples, train_src, args.seed)
        held_out = real_length_rows(tokenizer, args.eval_rows, eval_src, args.seed + 1)
        what = (
            f"real-length rows ({ROW_TOKENS[0]}-{ROW_TOKENS[1]} tokens, uniform) built by joining answers of "
            f"data/alpaca_sample_zh.json (its own rows are 12-85 tokens), eval rows from other source rows"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, part in (("train.jsonl", train), ("eval.jsonl", held_out)):
        path = out_dir / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        files.append(path)
    return files[0], files[1], f"{len(train)} training rows and {len(held_out)} held-out rows: {what}"


def order_efficiency(n_rows: int, seed: int, batch_sizes: tuple[int, ...]) -> dict:
    """Padding efficiency of each batch order alone (no training), for n_rows lengths drawn like the bench rows.

    The Trainer sorts rows by length within groups of up to 50 batches, but makes at least 4 groups, so a
    small data set gets small groups and more padding than the course's 26,858 rows would.
    """
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    rng = random.Random(seed)
    lengths = [rng.randint(*ROW_TOKENS) for _ in range(n_rows)]
    figures = {}
    for batch in batch_sizes:
        generator = torch.Generator().manual_seed(seed)
        orders = {
            "random": torch.randperm(n_rows, generator=generator).tolist(),
            "group_by_length": get_length_grouped_indices(lengths, batch, generator=generator),
        }
        for name, order in orders.items():
            batches = [[lengths[i] for i in order[k : k + batch]] for k in range(0, n_rows, batch)]
            figures[(batch, name)] = sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)
    return figures
