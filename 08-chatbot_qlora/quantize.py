"""Lesson 08's quantised base: the bitsandbytes config from the flags, the base loaded quantised, one clear line
for each thing that cannot work. train.py and infer.py both load the base here, so both hold the same codes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import UserError, first_line

if TYPE_CHECKING:
    from torch import nn

QUANTIZATIONS = ("nf4", "fp4", "int8")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
INSTALL = "pip install -r 08-chatbot_qlora/requirements.txt"
# the bitsandbytes layer classes a quantised Linear becomes (bitsandbytes.nn)
QUANTIZED_LAYERS = ("Linear4bit", "Linear8bitLt")


def require_bitsandbytes() -> None:
    """bitsandbytes is this lesson's one extra dependency: without it, one line saying how to install it."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"this lesson needs bitsandbytes, which is not installed: {INSTALL}")


def check_flags(quantization: str, double_quant: bool, compute_dtype: str | None) -> None:
    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantization {quantization}: pick one of {', '.join(QUANTIZATIONS)}")
    if quantization == "int8" and compute_dtype is not None:
        raise UserError("--compute_dtype is for 4-bit bases (nf4, fp4); an int8 base computes in the input's dtype")
    if compute_dtype is not None and compute_dtype not in COMPUTE_DTYPES:
        raise UserError(f"--compute_dtype {compute_dtype}: pick one of {', '.join(COMPUTE_DTYPES)}")


def bnb_config(quantization: str, double_quant: bool, compute_dtype: str):
    """transformers' BitsAndBytesConfig: 4-bit (nf4/fp4, blocks of 64, optional double quantisation) or 8-bit."""
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )


def refuse_quantized_folder(name_or_path: str, what: str) -> None:
    """A folder saved already quantised has lost its full-precision weights: it cannot be quantised again."""
    config = Path(name_or_path).expanduser() / "config.json"
    if config.is_file() and "quantization_config" in json.loads(config.read_text(encoding="utf-8")):
        raise UserError(f"{name_or_path} is already quantised; {what} needs the full-precision base model")


def load_quantized(name_or_path: str, quantization: str, double_quant: bool, compute_dtype: str, dtype: str,
                   device: str, trust_remote_code: bool = False) -> nn.Module:  # fmt: skip
    """The base model, each Linear layer but the output layer quantised as it is read from disk.

    `dtype`: the layers left unquantised (embeddings, LayerNorms). The quantised weights live on `device`:
    bitsandbytes quantises as the weights move there."""
    import torch
    from transformers import AutoModelForCausalLM

    require_bitsandbytes()
    refuse_quantized_folder(name_or_path, f"--quantization {quantization}")
    config = bnb_config(quantization, double_quant, compute_dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, quantization_config=config, dtype=getattr(torch, dtype), device_map={"": device},
            trust_remote_code=trust_remote_code,
        )  # fmt: skip
    except (ValueError, RuntimeError, ImportError) as exc:
        raise UserError(f"bitsandbytes cannot quantise {name_or_path} to {quantization}: {first_line(exc)}") from exc
    if not quantized_layers(model):
        raise UserError(f"bitsandbytes quantised no layer of {name_or_path} ({quantization}): it has no Linear layers")
    return model


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if type(m).__name__ in QUANTIZED_LAYERS}


def record(quantization: str, double_quant: bool, compute_dtype: str) -> dict:
    """What method.json keeps of the quantisation: infer.py rebuilds the same quantised base from it."""
    four_bit = quantization != "int8"
    return {
        "quantization": quantization,
        "double_quant": double_quant if four_bit else None,
        "compute_dtype": compute_dtype if four_bit else None,
    }


def default_device() -> str:
    """Where the quantised weights go when nothing else says: the accelerator when there is one, else cpu."""
    import torch

    accelerator = getattr(torch, "accelerator", None)
    return accelerator_device() if accelerator is not None and accelerator.is_available() else "cpu"


def accelerator_device() -> str:
    """This process's accelerator: under torchrun each process quantises onto its own (LOCAL_RANK)."""
    import os

    import torch

    accelerator = getattr(torch, "accelerator", None)
    kind = getattr(accelerator.current_accelerator() if accelerator else None, "type", "cuda")
    return f"{kind}:{int(os.environ.get('LOCAL_RANK', 0))}"
