"""Lesson 08's memory figures: the weight bytes of a model per storage format, exactly, from its architecture (meta
device, no weights); and the peak RSS of one LoRA training step with the base in fp32, nf4 or int8, each in its
own process (measure.process), on the full-size architecture with random weights.

    python bench.py --kbit-memory /tmp/bloom-1b4-random     # writes the fp32 model there once (~5 GB)
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from common.lessons import lesson_module

from .memory import rss_mb, write_full_size_model
from .process import run_in_process

FORMATS = ("fp32", "nf4", "int8")  # the base model's storage in the training-step measurement
BLOCK, BLOCK2 = 64, 256  # 4-bit: weights per fp32 absmax; double quantisation: absmax values per fp32 scale


def linear_bytes(out_features: int, in_features: int, fmt: str) -> int:
    """Bytes bitsandbytes keeps for one quantised Linear weight (bias not included), as its tensors hold them:
    fp32/bf16: the matrix; int8: one byte per weight + an fp32 scale per row; nf4: two weights per byte + an fp32
    absmax per 64 weights + the 16-entry fp32 code table; nf4+dq: the absmax values as 8-bit codes + an fp32 scale
    per 256 of them + the fp32 offset + the 256-entry fp32 code table."""
    n = out_features * in_features
    blocks = math.ceil(n / BLOCK)
    if fmt in ("fp32", "bf16"):
        return n * (4 if fmt == "fp32" else 2)
    if fmt == "int8":
        return n + 4 * out_features
    packed = math.ceil(n / 2) + 16 * 4
    if fmt == "nf4":
        return packed + 4 * blocks
    return packed + blocks + 4 * math.ceil(blocks / BLOCK2) + 4 + 256 * 4  # nf4+dq


def weight_bytes(config) -> dict:
    """Per format (fp32, bf16, int8, nf4, nf4+dq): the bytes of every weight of the model, the Linear layers
    bitsandbytes quantises stored as that format and the rest (embedding, LayerNorms, biases) in fp32 (bf16 for
    the bf16 row). The model is built on the meta device: exact counts, no memory."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    output = model.get_output_embeddings()
    linears = [m for m in model.modules() if type(m) is nn.Linear and m is not output]
    quantised = {id(m.weight) for m in linears}
    rest = sum(p.numel() for p in model.parameters() if id(p) not in quantised)  # shared (tied) tensors once
    figures = {}
    for fmt in ("fp32", "bf16", "int8", "nf4", "nf4+dq"):
        q = sum(linear_bytes(m.out_features, m.in_features, fmt) for m in linears)
        figures[fmt] = {"quantised_bytes": q, "rest_bytes": rest * (2 if fmt == "bf16" else 4)}
    figures["quantised_weights"] = sum(m.weight.numel() for m in linears)
    figures["other_weights"] = rest
    return figures


def status_mb(field: str) -> float:
    """A /proc/self/status figure in MiB (Linux): VmRSS now, VmHWM the peak since start or the last reset."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    """Start VmHWM afresh (Linux 4.0+: write 5 to /proc/self/clear_refs), so the step's peak is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def lora_step(spec: dict) -> dict:
    """In a fresh process: load the base in spec['format'], add lesson 05's LoRA (r=8, query_key_value), run one
    training step (forward, backward, AdamW) on one row of spec['tokens'] tokens. RSS before loading, after it,
    the peak while loading, and the peak during the step alone.

    The quantised bases are loaded directly quantised (bitsandbytes quantises each tensor as it is read), as a
    QLoRA user loads them; lesson 08's train.py does the same after step 4. Reading the fp32 file maps its pages
    into the process, so the loading peak can include full-precision pages the quantised model no longer holds:
    that is why the step's own peak is measured apart."""
    import torch
    from peft import prepare_model_for_kbit_training

    from common.models import load_base_model
    from common.results import peak_rss_mb
    from common.train_args import parse_train_args

    torch.manual_seed(0)
    train = lesson_module("08", "train")
    fmt = spec["format"]
    flags = ["--model_name_or_path", spec["model"], "--quantization", "nf4" if fmt == "fp32" else fmt]
    args, _ = parse_train_args(train.ScriptArguments, [*flags, "--output_dir", spec["work"]], train.LESSON_DIR, 2e-4)
    before, started = rss_mb(), time.perf_counter()
    if fmt == "fp32":
        model = load_base_model(spec["model"])
    else:
        model = train.QUANTIZE.load_quantized(spec["model"], fmt, True, "float32", "float32", "cpu")
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = train.LORA.add_method(model, args, None)
    with torch.no_grad():  # safetensors are memory-mapped: read every weight once, as the first step would
        for p in model.parameters():
            p.sum()
    loaded, load_s, load_peak = rss_mb(), time.perf_counter() - started, status_mb("VmHWM")
    step_peak_known = reset_peak()
    ids = torch.randint(5, model.config.vocab_size, (1, spec["tokens"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    model.train()
    started = time.perf_counter()
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
    optimizer.step()
    step_s = time.perf_counter() - started
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return {"format": fmt, "before_mb": before, "loaded_mb": loaded, "load_peak_mb": load_peak,
            "step_peak_mb": status_mb("VmHWM") if step_peak_known else None, "peak_mb": peak_rss_mb(),
            "load_s": load_s, "step_s": step_s, "tensor_bytes": held}  # fmt: skip


def kbit_memory(args, work: Path) -> list[dict]:
    """bench.py --kbit-memory DIR: the exact weight bytes of bloom-1b4-zh per format, then one LoRA step per base
    format, each in its own process, on the full-size architecture (random fp32 weights written to DIR once), or
    on --model_name_or_path (e.g. the tiny model, to run the code path)."""
    from transformers import BloomConfig

    from common.models import REAL_CONFIG
    from common.tiny_model import build_tokenizer

    print_weight_bytes(weight_bytes(BloomConfig(**REAL_CONFIG)))
    model = args.model_name_or_path
    if model is None:
        folder = Path(args.kbit_memory)
        if not (folder / "model.safetensors.index.json").is_file():
            print(f"[bench] writing the full-size architecture to {folder} ...", file=sys.stderr, flush=True)
            write_full_size_model(folder, build_tokenizer())
        model = str(folder)
    rows = []
    for fmt in FORMATS:
        print(f"[bench] one LoRA step on a {fmt} base, in its own process ...", file=sys.stderr, flush=True)
        spec = {"model": model, "format": fmt, "tokens": 128, "work": str(work / fmt)}
        rows.append(run_in_process("measure.kbit_memory:lora_step", spec, work / f"kbit-{fmt}.log"))
    print_steps(model, rows)
    return rows


def print_weight_bytes(figures: dict) -> None:
    print("\nweight bytes of bloom-1b4-zh (meta device, exact): the Linear layers bitsandbytes quantises "
          f"({figures['quantised_weights']:,d} weights) in each format, the rest "
          f"({figures['other_weights']:,d}: tied embedding, LayerNorms, biases) in fp32 (bf16 row: bf16)")  # fmt: skip
    print("| format | quantised layers, bytes | bits per weight | total bytes | vs fp32 |\n|---|---:|---:|---:|---:|")
    fp32 = figures["fp32"]["quantised_bytes"] + figures["fp32"]["rest_bytes"]
    for fmt in ("fp32", "bf16", "int8", "nf4", "nf4+dq"):
        q, total = figures[fmt]["quantised_bytes"], figures[fmt]["quantised_bytes"] + figures[fmt]["rest_bytes"]
        bits = 8 * q / figures["quantised_weights"]
        print(f"| {fmt} | {q:,d} | {bits:.3f} | {total:,d} | {total / fp32:.3f} |")


def print_steps(model: str, rows: list[dict]) -> None:
    print(f"\none LoRA step (r=8, query_key_value; 1 row of 128 tokens; AdamW) on {model}, each base format in its "
          "own process; RSS in MB: before loading, after loading (every weight read once), the peak while loading, "
          "the peak during the training step alone (VmHWM reset after loading), the process's ru_maxrss")  # fmt: skip
    print("| base | before | loaded | loading peak | step peak | step peak vs fp32 | tensors MB | process peak "
          "| load s | step s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    fp32 = next(r for r in rows if r["format"] == "fp32")
    for r in rows:
        step = f"{r['step_peak_mb']:,.0f}" if r["step_peak_mb"] is not None else "n/a"
        ratio = (
            f"{r['step_peak_mb'] / fp32['step_peak_mb']:.2f}" if r["step_peak_mb"] and fp32["step_peak_mb"] else "n/a"
        )
        print(f"| {r['format']} | {r['before_mb']:,.0f} | {r['loaded_mb']:,.0f} | {r['load_peak_mb']:,.0f} | {step} | "
              f"{ratio} | {r['tensor_bytes'] / 2**20:,.0f} | {r['peak_mb']:,.0f} | {r['load_s']:.1f} | "
              f"{r['step_s']:.1f} |")  # fmt: skip
