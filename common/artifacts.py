"""The trained artifact: written atomically into `<output_dir>/adapter`, then found, checked and loaded back.

A peft adapter folder describes itself (adapter_config.json: the method and the base model). A method peft does
not save (BitFit) writes its own tensors plus a method record (method.json) with the same two facts, so finding,
checking and loading back work the same way for every lesson.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .distributed import gathered, partitioned
from .errors import UserError, first_line
from .lessons import LESSON_OF_METHOD, LESSONS
from .parameters import trainable_parameters

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

FINAL_SUBDIR = "adapter"  # the finished artifact, next to the Trainer's checkpoint-* folders
METHOD_RECORD = "method.json"  # for artifacts peft does not describe: the method and the base model
# the README's offline quick start, for a learner who has no adapter yet
TINY_QUICK_START = (
    "python -m common.tiny_model tiny-bloom && python {lesson}/train.py --model_name_or_path tiny-bloom "
    "--dataset data/alpaca_sample_zh.json --max_steps 30"
)


def save_final(trainer: Trainer, write: Callable[[Path], None]) -> Path | None:
    """Write the finished artifact atomically: into a temporary folder beside it, then rename.

    A crash mid-save leaves the previous artifact (or none), never a half-written one. Only rank 0 writes it.
    Under ZeRO-3 every rank first gathers the trainable tensors, and every rank runs `write`: saving a prompt
    encoder's output runs the encoder, and each step of a partitioned module is a collective one. The other
    ranks write into a scratch folder that is deleted at once.
    """
    params = trainable_parameters(trainer.accelerator.unwrap_model(trainer.model))
    with gathered(params):
        if not trainer.is_world_process_zero():
            if partitioned(params):
                with tempfile.TemporaryDirectory() as scratch:
                    write(Path(scratch))
            return None
        final = Path(trainer.args.output_dir) / FINAL_SUBDIR
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
    _refuse_empty_tensors(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    print(f"saved to {final}", file=sys.stderr)
    return final


def _refuse_empty_tensors(folder: Path) -> None:
    """A zero-size tensor in the artifact means a partitioned (ZeRO-3) parameter was saved ungathered:
    fail loudly rather than replace a good artifact with an empty one. Reads only the files' headers."""
    from safetensors import safe_open

    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as tensors:
            empty = [name for name in tensors.keys() if 0 in tensors.get_slice(name).get_shape()]
        if empty:
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"{file.name}: {empty[0]} has no elements; the artifact was not saved")


def write_method_record(folder: Path, method: str, model: PreTrainedModel, **details) -> None:
    """method.json, for an artifact peft does not describe: which method made it, on which base model, and
    whatever else its infer.py needs to load it (e.g. the name of its weights file)."""
    record = {"method": method, "base_model_name_or_path": model.config._name_or_path, **details}
    (folder / METHOD_RECORD).write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _description(folder: Path) -> dict | None:
    """The artifact's own description: method.json, or peft's adapter_config.json."""
    for name, method_key in ((METHOD_RECORD, "method"), ("adapter_config.json", "peft_type")):
        if (folder / name).is_file():
            saved = json.loads((folder / name).read_text(encoding="utf-8"))
            return {**saved, "method": str(saved.get(method_key))}
    return None


def read_method_record(folder: Path) -> dict:
    return json.loads((folder / METHOD_RECORD).read_text(encoding="utf-8"))


def artifact_method(folder: Path) -> str | None:
    """Which method saved this folder: a peft type such as 'LORA', a method record's method, or None."""
    description = _description(folder)
    return description["method"] if description else None


def resolve_adapter(adapter: str | None, lesson_dir: Path, method: str) -> Path:
    """Find the trained artifact and check that this lesson made it; clear errors otherwise."""
    folder = Path(adapter) if adapter else lesson_dir / "output"
    if (folder / FINAL_SUBDIR).is_dir():
        folder = folder / FINAL_SUBDIR
    found = artifact_method(folder) if folder.is_dir() else None
    if found is None:
        raise UserError(
            f"no trained adapter in {folder}; train one first: python {lesson_dir.name}/train.py (downloads "
            f"bloom-1b4-zh; a GPU helps), or in seconds on any CPU, with the tiny model: "
            f"{TINY_QUICK_START.format(lesson=lesson_dir.name)} (or pass --adapter DIR)"
        )
    if found != method:
        lesson = LESSONS[LESSON_OF_METHOD[found]] if found in LESSON_OF_METHOD else "another tool"
        raise UserError(
            f"{folder} holds a {found} adapter, made by {lesson}; use python {lesson}/infer.py --adapter {folder}"
        )
    return folder


def artifact_base(folder: Path) -> str:
    """The base model an artifact was trained on, as recorded at save time."""
    return _description(folder)["base_model_name_or_path"]


def load_base_for(
    folder: Path, model_name_or_path: str | None, dtype: str, trust_remote_code: bool
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer saved with the artifact, and the base model it names (unless the user names another)."""
    from .models import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(str(folder), trust_remote_code)
    model = load_base_model(model_name_or_path or artifact_base(folder), dtype, trust_remote_code)
    return tokenizer, model


@contextmanager
def explain_mismatch(folder: Path, model: PreTrainedModel, token_dims: set[int] | None = None) -> Iterator[None]:
    """Turn a shape/key mismatch while loading an artifact into 'trained on another base model'.

    `token_dims`: the widths a prompt-learning adapter may have on this model (default: its hidden size)."""
    try:
        _check_dimensions(folder, model, token_dims)
        yield
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(
            f"{folder} does not fit the base model {model.config._name_or_path}: it was trained on "
            f"{artifact_base(folder)} ({type(exc).__name__}: {first_line(exc, 160)})"
        ) from exc


def _check_dimensions(folder: Path, model: PreTrainedModel, token_dims: set[int] | None) -> None:
    """Prompt-learning adapters load into any base model without complaint and fail only when generating."""
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        return
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    cfg = model.config
    widths = token_dims or {getattr(cfg, "hidden_size", saved.get("token_dim"))}
    if saved.get("token_dim") is not None and saved["token_dim"] not in widths:
        raise ValueError(f"adapter token_dim = {saved['token_dim']}, model hidden_size = {cfg.hidden_size}")
    layers = getattr(cfg, "num_hidden_layers", saved.get("num_layers"))
    if saved.get("num_layers") is not None and saved["num_layers"] != layers:
        raise ValueError(f"adapter num_layers = {saved['num_layers']}, model num_hidden_layers = {layers}")
