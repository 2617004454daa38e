"""Memory: peak RSS while loading a model and reading every weight once; the full-size architecture written with
random weights, one shard at a time."""

import json
from pathlib import Path

from common.models import REAL_CONFIG

from .process import run_in_process


def rss_mb() -> float:
    """Resident memory now, in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_memory(spec: dict) -> dict:
    """In a fresh process (measure.process): peak RSS of loading a model with load_base_model, then reading
    every weight once.

    transformers maps safetensors files into memory and reads pages only when a weight is first used, so RSS
    right after loading says little; reading each weight brings all of them in, as a first forward pass would.
    """
    import torch

    from common.models import load_base_model
    from common.results import peak_rss_mb

    before = rss_mb()
    model = load_base_model(spec["model"])
    loaded = rss_mb()
    with torch.no_grad():
        for p in model.parameters():
            p.sum()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"before_mb": before, "loaded_mb": loaded, "peak_mb": peak_rss_mb(), "weight_bytes": weight_bytes}


def write_full_size_model(folder: Path, tokenizer, dtype=None) -> None:
    """bloom-1b4-zh's architecture with random weights (fp32 unless dtype says), written one shard at a time
    (little memory), with the given tokenizer (its vocabulary may be smaller than the model's)."""
    import torch
    from safetensors.torch import save_file
    from transformers import BloomConfig, BloomForCausalLM

    dtype = dtype or torch.float32
    config = BloomConfig(
        **REAL_CONFIG,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in BloomForCausalLM(config).state_dict().items() if k != "lm_head.weight"}
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    weight_map, shard, shard_bytes, total = {}, {}, 0, 0

    def flush() -> None:
        name = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
        save_file(shard, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        shard.clear()

    for key, shape in shapes.items():
        if key.endswith("layernorm.weight") or key.endswith("ln_f.weight"):
            tensor = torch.ones(shape)
        elif key.endswith("bias"):
            tensor = torch.zeros(shape)
        else:
            tensor = torch.empty(shape).normal_(0, config.initializer_range, generator=generator)
        shard[key] = tensor.to(dtype)
        shard_bytes += tensor.numel() * shard[key].element_size()
        total += tensor.numel() * shard[key].element_size()
        if shard_bytes >= 2**29:
            flush()
            shard_bytes = 0
    if shard:
        flush()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    config.dtype = str(dtype).removeprefix("torch.")
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def print_memory(folder: Path, m: dict) -> None:
    weights_mb = m["weight_bytes"] / 2**20
    print(
        f"\nmemory: the full-size bloom-1b4-zh architecture (random fp32 weights in {folder}), loaded with "
        "common.models.load_base_model, then every weight read once"
    )
    print(
        f"weights {weights_mb:,.0f} MB; RSS before loading {m['before_mb']:,.0f} MB, right after loading "
        f"{m['loaded_mb']:,.0f} MB (weights are memory-mapped, read on first use), peak {m['peak_mb']:,.0f} MB"
    )
    print(
        f"peak RSS / weight bytes: {m['peak_mb'] / weights_mb:.2f}x; "
        f"(peak - before) / weight bytes: {(m['peak_mb'] - m['before_mb']) / weights_mb:.2f}x"
    )


def measure_memory(folder: Path, tokenizer, work: Path) -> None:
    """bench.py --memory: the full-size architecture written to `folder` once, then loaded in a fresh process."""
    import sys

    if not (folder / "model.safetensors.index.json").is_file():
        print(f"[bench] writing the full-size architecture to {folder} ...", file=sys.stderr, flush=True)
        write_full_size_model(folder, tokenizer)
    print_memory(folder, run_in_process("measure.memory:load_memory", {"model": str(folder)}, work / "memory.log"))
