"""`infer.py --merge_to`: the adapter merged into the base model, saved as a plain transformers model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def save_merged(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str, gen_kwargs: dict) -> None:
    """Save a plain transformers model (no peft needed to load it) plus the tokenizer with its chat template.

    generation_config.json gets infer.py's settings (EOS, pad, sampling, answer length), so `pipeline(...)` and
    `generate()` on the merged folder stop and sample as infer.py does.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--merge_to {out} exists and is not an empty folder")
    inp, outp = model.get_input_embeddings(), model.get_output_embeddings()
    if getattr(model.config, "tie_word_embeddings", False) and outp is not None and inp.weight is not outp.weight:
        # the method trained the input embeddings only; saving as tied would overwrite lm_head with them
        model.config.tie_word_embeddings = False
    model.generation_config.update(**gen_kwargs)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"merged model written to {out}", file=sys.stderr)
