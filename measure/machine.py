"""The machine a benchmark runs on: what it is, how loaded it is, and its measured matrix-multiply limit."""

import os

GEMM_ROWS = (256, 2048)  # one row at the course's 256-token limit; a batch of 8 such rows


def load_line(when: str) -> tuple[str, bool]:
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    busy = load > cores
    return f"load average (1 min) {when}: {load:.2f} on {cores} cores", busy


def warn_if_busy(line: str, busy: bool) -> None:
    print(line)
    if busy:
        print(
            "warning: the load exceeds the core count; other programs share the cores, so these figures and "
            "their ratios measure that contention, not the layouts"
        )


def meta_model(model_dir: str):
    """The model's architecture on the meta device: its shapes, no weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))


def measure_limit(model_dir: str, dtype_name: str = "float32", device: str = "cpu", seconds: float = 0.3) -> float:
    """Print the matmul FLOP/s at the model's weight shapes; return the best (the run's limit)."""
    import torch

    from .gemm import gemm_table, weight_shapes

    dtype = getattr(torch, dtype_name)
    table = gemm_table(weight_shapes(meta_model(model_dir)), list(GEMM_ROWS), dtype, device, seconds)
    best = max(t["flops_per_s"] for t in table)
    print(f"\nmatmul limit ({dtype_name}, torch.mm on {device}, best of 3 timings at the model's weight shapes):")
    print("  " + "; ".join(f"{t['rows']}x{t['in']} @ {t['in']}x{t['out']} {t['flops_per_s'] / 1e9:.1f}" for t in table))
    print(f"  GFLOP/s; limit = the best: {best / 1e9:.1f} GFLOP/s")
    return best


def describe_machine() -> str:
    import platform

    import peft
    import torch
    import transformers

    from .gemm import cpu_features

    if torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}"
    else:
        features = cpu_features()
        flags = ", ".join(f for f, present in features.items() if present) or "unknown"
        device = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, flags: {flags}"
    return (
        f"{device}; torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}, peft {peft.__version__}"
    )
