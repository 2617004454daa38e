"""The machine's limit: the matrix-multiply throughput it attains at a model's own shapes, and what its CPU
can do in low precision.

Training is mostly matrix multiplies (measure/flops.py counts them), so the best FLOP/s a plain `torch.mm`
reaches at the model's weight shapes is the ceiling a training run can be compared against. It is measured,
not taken from a data sheet: a 2-core virtual machine's nominal peak says little about what it delivers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_features() -> dict[str, bool]:
    """The /proc/cpuinfo flags that decide fp32 and bf16/fp16 matmul speed (Linux; empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return {}
    for line in info.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return {flag: flag in flags for flag in CPU_FLAGS}
    return {}


def has_bf16_hardware(features: dict[str, bool]) -> bool:
    return features.get("avx512_bf16", False) or features.get("amx_bf16", False)


def weight_shapes(model: nn.Module, min_size: int = 64) -> list[tuple[int, int]]:
    """The distinct (in, out) shapes of the model's Linear layers, largest first (LoRA's rank-r ones left out)."""
    from torch import nn

    shapes = {
        (m.in_features, m.out_features)
        for m in model.modules()
        if isinstance(m, nn.Linear) and min(m.in_features, m.out_features) >= min_size
    }
    return sorted(shapes, key=lambda s: -s[0] * s[1])


def matmul_flops_per_s(
    rows: int, shape: tuple[int, int], dtype: torch.dtype, device: str = "cpu", seconds: float = 0.3, repeats: int = 3
) -> float:
    """Best of `repeats` timings of (rows x in) @ (in x out), each repeating the multiply for about `seconds`."""
    import torch

    k, n = shape
    a = torch.randn(rows, k, dtype=dtype, device=device)
    b = torch.randn(k, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.mm(a, b)  # first call: allocation and kernel selection
    sync()
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < seconds / 4 or calls < 2:
        torch.mm(a, b)
        calls += 1
        sync()
    per_call = (time.perf_counter() - start) / calls
    calls = max(1, round(seconds / per_call))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b)
        sync()
        best = min(best, (time.perf_counter() - start) / calls)
    return 2 * rows * k * n / best


def gemm_table(
    shapes: list[tuple[int, int]], rows: list[int], dtype: torch.dtype, device: str = "cpu", seconds: float = 0.3
) -> list[dict]:
    """FLOP/s of each (rows, shape) pair."""
    return [
        {"rows": r, "in": k, "out": n, "flops_per_s": matmul_flops_per_s(r, (k, n), dtype, device, seconds)}
        for r in rows
        for k, n in shapes
    ]
