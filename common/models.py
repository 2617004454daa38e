"""Loading the base model and its tokenizer, with the usual mistakes turned into one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import hub
from .errors import UserError, first_line

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "Langboat/bloom-1b4-zh"
# Facts of DEFAULT_MODEL's config.json: its architecture, for counting and measuring without its weights
REAL_CONFIG = dict(vocab_size=46145, hidden_size=2048, n_layer=24, n_head=16, tie_word_embeddings=True)
DTYPES = ("float32", "float16", "bfloat16")


def check_model_path(name: str) -> None:
    """A name that can only be a local path must exist (hub ids look like owner/name); a hub id needs the hub."""
    local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if Path(name).expanduser().is_dir():
        return
    if local:
        raise UserError(f"model not found: {name} (no such folder)")
    hub.require_hub("model", name)


def _could_not_load(what: str, name: str, exc: Exception) -> UserError:
    hint = f"; {hub.OFFLINE_HELP}" if hub.offline() and not Path(name).expanduser().is_dir() else ""
    return UserError(f"could not load {what} {name!r}: {first_line(exc)}{hint}")


def load_tokenizer(
    name_or_path: str, trust_remote_code: bool = False, prompt_format: str | None = None
) -> PreTrainedTokenizerBase:
    """The tokenizer, with a pad token and the chat template of `prompt_format` (common.prompt_format; None: the
    format recorded in the folder, e.g. an adapter's, else the course's)."""
    from transformers import AutoTokenizer

    from .prompt_format import apply_prompt_format

    check_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _could_not_load("a tokenizer from", name_or_path, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # every saved tokenizer (adapter/, checkpoints, --merge_to) then carries the format and its template
    apply_prompt_format(tokenizer, prompt_format, name_or_path)
    return tokenizer


def load_base_model(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False) -> PreTrainedModel:
    """A causal LM in `dtype` (one of DTYPES)."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype}: pick one of {', '.join(DTYPES)}")
    check_model_path(name_or_path)
    if Path(name_or_path).expanduser().is_dir():  # record an absolute path, so infer.py works from anywhere
        name_or_path = str(Path(name_or_path).expanduser().resolve())
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
        )
    except ValueError as exc:  # transformers raises ValueError for a config with no causal-LM class
        raise UserError(f"{name_or_path} is not a causal language model: {first_line(exc)}") from exc
    except OSError as exc:
        raise _could_not_load("the model", name_or_path, exc) from exc
