"""Load alpaca-style instruction data, tokenise it with label masking, and collate batches."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .distributed import is_distributed, main_process_first
from .errors import UserError, first_line
from .hub import require_hub
from .prompt_format import COURSE, MODEL, PROMPT_FORMAT_HELP, PROMPT_FORMATS, instruction_prompt, prompt_and_row_ids

if TYPE_CHECKING:
    import datasets
    from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

REQUIRED_COLUMNS = ("instruction", "output")
TEXT_COLUMNS = ("instruction", "input", "output")
FILE_SUFFIXES = (".json", ".jsonl", ".parquet")
IGNORE_INDEX = -100  # label value the loss skips


def load_instruction_data(dataset: str) -> datasets.Dataset:
    """Return a `datasets.Dataset` with the string columns instruction / input / output.

    `dataset` is a hub dataset id, a folder written by `save_to_disk`, or a .json / .jsonl / .parquet file.
    """
    import datasets

    path = Path(dataset).expanduser()
    if path.is_dir():
        if not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
            raise UserError(f"{dataset} is a folder but not one written by `datasets.save_to_disk`")
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise UserError(f"{dataset} holds the splits {sorted(loaded)}, but no 'train' split")
            loaded = loaded["train"]
        return _check_columns(loaded, dataset)
    if path.exists():
        if path.suffix == ".parquet":
            return _check_columns(datasets.load_dataset("parquet", data_files=str(path), split="train"), dataset)
        if path.suffix in (".json", ".jsonl"):
            return _check_columns(datasets.Dataset.from_list(_read_json_rows(path)), dataset)
        raise UserError(f"{dataset}: unsupported file type; use one of {', '.join(FILE_SUFFIXES)}")
    if path.suffix in FILE_SUFFIXES or dataset.startswith((".", "/", "~")) or dataset.count("/") > 1:
        raise UserError(f"dataset not found: {dataset} (no such file or folder)")
    require_hub("dataset", dataset)
    try:
        loaded = datasets.load_dataset(dataset, split="train")
    except Exception as exc:  # the hub raises many types; the message is what the user needs
        raise UserError(
            f"could not load the hub dataset {dataset!r} ({type(exc).__name__}: {first_line(exc, 200)}); "
            "check the id and your network, or pass a local .json/.jsonl/.parquet file or save_to_disk folder"
        ) from exc
    return _check_columns(loaded, dataset)


def _read_json_rows(path: Path) -> list[dict]:
    """Read a JSON list of rows, or JSON lines, with errors that point at the bad spot."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (undecodable byte at offset {exc.start}); save it as UTF-8") from None
    if not text.strip():
        raise UserError(f"{path} is empty")
    rows = None
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            # many exported alpaca files are JSON lines named .json: those fail with "Extra data" on line 2
            if text.lstrip().startswith("[") or exc.msg != "Extra data":
                raise UserError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if rows is None:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UserError(f'{path}: expected a list of rows like {{"instruction": ..., "output": ...}}')
    if not rows:
        raise UserError(f"{path} holds no rows")
    return rows


def _check_columns(ds: datasets.Dataset, source: str) -> datasets.Dataset:
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise UserError(
            f"{source}: missing column(s) {', '.join(missing)}; columns found: {', '.join(ds.column_names) or 'none'}"
        )
    if len(ds) == 0:
        raise UserError(f"{source} holds no rows")
    if "input" not in ds.column_names:
        ds = ds.add_column("input", [""] * len(ds))
    for column in TEXT_COLUMNS:
        for index, value in enumerate(ds[column]):
            if not isinstance(value, str) and not (column == "input" and value is None):
                raise UserError(
                    f"{source}: row {index} has {column} = {value!r}; every instruction/input/output must be a string"
                )
    return ds.select_columns(list(TEXT_COLUMNS))


def tokenize_dataset(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> datasets.Dataset:
    """Tokenise rows into input_ids / attention_mask / labels; only the answer and EOS (in the model's chat
    format: its end-of-turn token) are learned.

    Rows longer than `max_length` are cut on the right: the answer loses its tail and its EOS, which is right,
    since the model should not learn to stop there. Rows whose prompt alone fills `max_length` would teach
    nothing and are dropped. Both counts are printed.
    """
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token; the model could not learn where an answer ends")

    def encode(batch):
        out = {"input_ids": [], "attention_mask": [], "labels": [], "cut": []}
        for p, row in prompt_and_row_ids(tokenizer, batch["instruction"], batch["input"], batch["output"]):
            ids = row[:max_length]
            if len(ids) <= len(p):
                continue  # nothing left to learn
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append([IGNORE_INDEX] * len(p) + ids[len(p) :])
            out["cut"].append(len(row) > max_length)
        return out

    with main_process_first():  # under several processes: tokenise once per machine, the others read the cache
        tokenized = ds.map(
            encode, batched=True, remove_columns=ds.column_names, desc="Tokenizing", **_shared_cache(ds, encode)
        )
    dropped = len(ds) - len(tokenized)
    if len(tokenized) == 0:
        raise UserError(
            f"every one of the {len(ds)} rows was dropped: each prompt alone fills --max_length {max_length}; "
            "raise --max_length"
        )
    cut = sum(tokenized["cut"])
    if cut or dropped:
        print(
            f"[data] max_length {max_length}: {cut} of {len(ds)} rows cut on the right (their answers lose EOS), "
            f"{dropped} dropped (prompt alone too long)",
            file=sys.stderr,
        )
    return tokenized.remove_columns("cut")


def _shared_cache(ds: datasets.Dataset, encode) -> dict:
    """Where the processes of one run share tokenised rows that have no cache of their own.

    A dataset read from files is cached by `datasets` already; rows built in memory (our .json/.jsonl reader)
    are not, so under several processes they get a file named by the rows, the tokenizer and this code.
    """
    if not is_distributed() or ds.cache_files:
        return {}
    import datasets
    from datasets.fingerprint import Hasher

    fingerprint = Hasher.hash((ds._fingerprint, encode))
    folder = Path(datasets.config.HF_DATASETS_CACHE) / "peft_course_tokenized"
    folder.mkdir(parents=True, exist_ok=True)
    return {"cache_file_name": str(folder / f"{fingerprint}.arrow"), "new_fingerprint": fingerprint}


def make_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorForSeq2Seq:
    """Pad input_ids with the pad token and labels with -100, on the tokenizer's padding side.

    Rows are never packed into one sequence: BLOOM takes no position ids and no 4D mask, so packed rows would
    silently attend to each other. On a GPU, lengths are padded to a multiple of 8 (tensor-core friendly shapes);
    on a CPU that would only add padding.
    """
    import torch
    from transformers import DataCollatorForSeq2Seq

    multiple = 8 if torch.cuda.is_available() else None
    return DataCollatorForSeq2Seq(
        tokenizer=tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=multiple
    )


def show_rows(
    dataset: str, model_name_or_path: str, index: int, max_length: int, prompt_format: str = "course"
) -> None:
    """Print what the model trains on: one row through template, tokenizer and masking, then a padded batch."""
    from .models import load_tokenizer
    from .prompt_format import end_of_turn_id

    rows = load_instruction_data(dataset)
    if not 0 <= index < len(rows) - 1:
        raise UserError(f"--show {index}: pick a row from 0 to {len(rows) - 2} (it is shown with the next one)")
    tokenizer = load_tokenizer(model_name_or_path, prompt_format=prompt_format)
    pair = rows.select([index, index + 1])
    row = pair[0]
    prompt = instruction_prompt(tokenizer, row["instruction"], row["input"] or "")
    end = f"EOS {tokenizer.eos_token!r}"
    if prompt_format == MODEL:
        end = f"end of turn {tokenizer.decode([end_of_turn_id(tokenizer)])!r}"
    print(f"== row {index} of {Path(dataset).name}")
    print(f"prompt (template applied): {prompt!r}")
    print(f"answer (+ {end}):   {row['output']!r}")
    tokenized = tokenize_dataset(pair, tokenizer, max_length)
    example = tokenized[0]
    ids, labels = example["input_ids"], example["labels"]
    n_prompt = sum(label == IGNORE_INDEX for label in labels)
    print(f"\n{len(ids)} tokens: {n_prompt} of prompt (label -100: no loss), {len(ids) - n_prompt} of answer + EOS")
    print(f"{'pos':>4} {'input_id':>8} {'label':>6}  token")
    for pos, (token_id, label) in enumerate(zip(ids, labels)):
        mark = "  <- answer starts: the loss begins here" if pos == n_prompt else ""
        print(f"{pos:>4} {token_id:>8} {label:>6}  {tokenizer.decode([token_id])!r}{mark}")
    print(f"\ninput_ids: {ids}")
    print(f"labels:    {labels}")

    batch = make_collator(tokenizer)(list(tokenized))
    print(f"\n== rows {index} and {index + 1} collated into one batch (padding side: {tokenizer.padding_side}, "
          f"pad id {tokenizer.pad_token_id})")  # fmt: skip
    for name in ("input_ids", "attention_mask", "labels"):
        print(f"{name}:")
        for line in batch[name].tolist():
            print(f"  {line}")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Show how a training row becomes input_ids and labels, and how two rows are padded into a batch.",
    )
    parser.add_argument("--show", type=int, required=True, metavar="N", help="row to show (with row N+1 in a batch)")
    parser.add_argument("--model_name_or_path", required=True, help="whose tokenizer to use, e.g. tiny-bloom")
    sample = Path(__file__).resolve().parents[1] / "data" / "alpaca_sample_zh.json"
    parser.add_argument("--dataset", default=str(sample), help="rows to read (default: the course's sample data)")
    parser.add_argument("--max_length", type=int, default=256, help="cut longer rows on the right, as train.py does")
    parser.add_argument("--prompt_format", default=COURSE, choices=PROMPT_FORMATS, help=PROMPT_FORMAT_HELP)
    args = parser.parse_args(argv)
    show_rows(args.dataset, args.model_name_or_path, args.show, args.max_length, args.prompt_format)


if __name__ == "__main__":
    from .errors import run_cli

    run_cli(main)
