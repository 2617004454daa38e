"""The one-GPU suite: every lesson's default on the full-size architecture in bf16, layouts 1 x 8 and 8 x 1
grouped, all runs in one process (a failed run is reported, the rest go on); samples/s, peak memory, MFU."""

import sys
from pathlib import Path

from common.errors import UserError
from common.lessons import LESSONS
from common.train_args import ACCELERATOR_LAYOUT, COURSE_LAYOUT

from .layouts import EFFECTIVE_BATCH, layout_flags, training_argv
from .lesson_runs import run_lessons
from .machine import describe_machine, measure_limit
from .memory import write_full_size_model
from .rows import write_rows

GPU_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.5),
    ("H100", 989.4),
    ("H200", 989.4),
    ("H800", 989.4),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
)


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for key, tflops in GPU_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def gpu_suite(args, work: Path, extra: list[str]) -> None:
    """Every lesson's default on the full-size architecture, layouts 1 x 8 and 8 x 1 grouped, one GPU."""
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.model_name_or_path:
        raise UserError(
            "--gpu-suite needs a GPU; to run its code path on this CPU, pass --model_name_or_path <a small model>"
        )
    from common.models import load_tokenizer
    from common.tiny_model import build_tokenizer

    if args.model_name_or_path:
        model, label = args.model_name_or_path, args.model_name_or_path
    else:
        folder = work / "bloom-1b4-zh-random-bf16"
        if not (folder / "model.safetensors.index.json").is_file():
            print(f"[bench] writing the full-size architecture (random bf16 weights) to {folder} ...", file=sys.stderr)
            write_full_size_model(folder, build_tokenizer(), torch.bfloat16)
        model = str(folder)
        label = "bloom-1b4-zh's architecture (1,303,111,680 params) with random bf16 weights, built here"
    precision = ["--bf16", "true", "--dtype", "bfloat16"] if cuda else []
    args.samples = args.suite_steps * EFFECTIVE_BATCH
    train_file, eval_file, data_label = write_rows(args, load_tokenizer(model), work / "data")
    device_name = torch.cuda.get_device_name() if cuda else "CPU"
    peak = peak_flops(device_name, args.peak_tflops) if cuda else measure_limit(model)
    peak_label = (
        f"{peak / 1e12:.0f} TFLOPS dense bf16 ({device_name}, data sheet)"
        if cuda and peak
        else "unknown for this GPU (pass --peak_tflops)"
        if cuda
        else "this CPU's measured fp32 matmul limit"
    )
    print(f"\nGPU suite: {describe_machine()}\nmodel: {label}\ndata: {data_label}")
    print(
        f"{args.suite_steps} optimizer steps of {EFFECTIVE_BATCH} rows per run; "
        f"flags {' '.join(precision + extra) or 'none'}; "
        f"figures from the second step on; MFU = useful FLOP/s / peak, peak = {peak_label}"
    )
    layouts = {"1x8 random (course)": layout_flags(COURSE_LAYOUT), "8x1 grouped": layout_flags(ACCELERATOR_LAYOUT)}
    argv = training_argv(args.seed, model, train_file, eval_file, [*precision, *extra], args.suite_steps)
    runs = [
        {
            "lesson": lesson,
            "tag": f"{lesson} {name}",
            "argv": [*argv, *flags, "--output_dir", str(work / f"{lesson}-{i}")],
        }
        for lesson in args.lessons
        for i, (name, flags) in enumerate(layouts.items())
    ]
    print(f"[bench] GPU suite: {len(runs)} runs in one process ...", file=sys.stderr, flush=True)
    results = run_lessons(runs, work / "suite.log", record_steps=True, keep_going=True)
    print("\n| lesson | layout | samples/s | tokens/s | peak GPU MB | TFLOP/s | MFU |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (lesson, layout), r in zip([(LESSONS[ls], name) for ls in args.lessons for name in layouts], results):
        if "error" in r:
            print(f"| {lesson} | {layout} | failed: {r['error']} | | | | |")
            continue
        mfu = f"{100 * r['flops_per_s'] / peak:.1f}%" if peak else "n/a"
        gpu = r["peak_memory_kind"].startswith("GPU")
        memory = f"{r['peak_memory_mb']:,.0f}" if gpu else "n/a (CPU)"
        print(
            f"| {lesson} | {layout} | {r['steady_samples_per_s']:.2f} | {r['steady_tokens_per_s']:,.0f} | "
            f"{memory} | {r['flops_per_s'] / 1e12:.3f} | {mfu} |"
        )
    failed = sum("error" in r for r in results)
    if failed:
        raise UserError(f"{failed} of {len(results)} GPU-suite runs failed (see the table)")
