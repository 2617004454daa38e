"""Precision on this machine: one LoRA training step in fp32, bf16 and fp16, the modes alternated."""

import time

from common.lessons import LESSONS, lesson_module
from common.train_args import CPU_LAYOUT

from .repeats import alternated, median, spread


def precision_step_times(spec: dict) -> dict:
    """In a fresh process (measure.process): one LoRA training step (forward, backward, AdamW) per precision
    mode, the modes alternated; the seconds of each step after a warm-up round."""
    import torch

    from common.data import load_instruction_data, make_collator, tokenize_dataset
    from common.models import load_base_model, load_tokenizer

    lora = lesson_module(LESSONS["05"], "train")
    tokenizer = load_tokenizer(spec["model"])
    rows = tokenize_dataset(load_instruction_data(spec["data"]), tokenizer, 256)
    batch = make_collator(tokenizer)([rows[i] for i in range(CPU_LAYOUT["per_device_train_batch_size"])])
    modes = {
        "fp32": ("float32", None),
        "bf16 autocast (fp32 weights; --bf16 true)": ("float32", torch.bfloat16),
        "bf16 weights (--dtype bfloat16 --bf16 true)": ("bfloat16", torch.bfloat16),
        "fp16 autocast (fp32 weights; --fp16 true)": ("float32", torch.float16),
    }
    models = {}
    for name, (dtype, _) in modes.items():
        torch.manual_seed(0)
        model = lora.add_method(
            load_base_model(spec["model"], dtype), lora.ScriptArguments(lora_dropout=0.0), tokenizer
        )
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        models[name] = (model, optimizer)

    def step(name: str) -> float:
        model, optimizer = models[name]
        autocast = modes[name][1]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    times = {name: [] for name in modes}
    for i, name in enumerate(alternated(list(modes), spec["repeats"] + 1)):
        seconds = step(name)
        if i >= len(modes):  # the first round warms up
            times[name].append(seconds)
    return {"times": times, "tokens": int(batch["attention_mask"].sum())}


def print_precision(model_label: str, figures: dict) -> None:
    import torch

    from .gemm import cpu_features, has_bf16_hardware, matmul_flops_per_s

    features = cpu_features()
    print(
        f"\nprecision: one LoRA training step (lesson 05), batch {CPU_LAYOUT['per_device_train_batch_size']} rows "
        f"({figures['tokens']} real tokens), {model_label}; median [lowest-highest] of the alternated steps"
    )
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in features.items())
    print(f"CPU flags: {flags}; torch sees {torch.backends.cpu.get_cpu_capability()}")
    print(
        "bf16/fp16 hardware (AVX512-BF16, AMX): "
        + ("yes" if has_bf16_hardware(features) else "no: bf16 and fp16 matmuls run in emulation here")
    )
    fp32 = median(figures["times"]["fp32"])
    for name, times in figures["times"].items():
        print(f"{name:<46} {spread(times, '.3f'):>24} s   {median(times) / fp32:6.2f}x the fp32 time")
    rows, shape = 256, (1024, 1024)  # small enough that emulated bf16 and fp16 finish in seconds
    speeds = {name: matmul_flops_per_s(rows, shape, getattr(torch, name), seconds=0.5, repeats=2) for name in
              ("float32", "bfloat16", "float16")}  # fmt: skip
    print(
        f"torch.mm {rows}x{shape[0]} @ {shape[0]}x{shape[1]}: "
        + "; ".join(f"{name} {v / 1e9:.1f} GFLOP/s ({v / speeds['float32']:.3f}x fp32)" for name, v in speeds.items())
    )
