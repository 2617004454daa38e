"""Load alpaca-style instruction data, tokenise it with label masking, and collate batches."""

import json
import sys
from pathlib import Path

from .errors import UserError, first_line
from .prompt import build_prompt

REQUIRED_COLUMNS = ("instruction", "output")
TEXT_COLUMNS = ("instruction", "input", "output")
FILE_SUFFIXES = (".json", ".jsonl", ".parquet")
IGNORE_INDEX = -100  # label value the loss skips


def load_instruction_data(dataset: str):
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


def _check_columns(ds, source: str):
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


def tokenize_dataset(ds, tokenizer, max_length: int):
    """Tokenise rows into input_ids / attention_mask / labels; only the answer and EOS are learned.

    Rows longer than `max_length` are cut on the right: the answer loses its tail and its EOS, which is right,
    since the model should not learn to stop there. Rows whose prompt alone fills `max_length` would teach
    nothing and are dropped. Both counts are printed.
    """
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token; the model could not learn where an answer ends")

    def encode(batch):
        prompts = [build_prompt(i, x or "") for i, x in zip(batch["instruction"], batch["input"])]
        prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(batch["output"], add_special_tokens=False)["input_ids"]
        out = {"input_ids": [], "attention_mask": [], "labels": [], "cut": []}
        for p, a in zip(prompt_ids, answer_ids):
            ids = (p + a + [tokenizer.eos_token_id])[:max_length]
            if len(ids) <= len(p):
                continue  # nothing left to learn
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append([IGNORE_INDEX] * len(p) + ids[len(p) :])
            out["cut"].append(len(p) + len(a) + 1 > max_length)
        return out

    tokenized = ds.map(encode, batched=True, remove_columns=ds.column_names, desc="Tokenizing")
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


def make_collator(tokenizer):
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
