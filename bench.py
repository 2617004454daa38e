"""Training speed on this machine: the lessons' default batch layout against the course's, alternated runs,
and how close each run gets to the machine's measured matrix-multiply limit.

    python bench.py                          # every lesson: course layout vs defaults, 3 alternated runs each
    python bench.py --lessons 05 --layouts   # lesson 05: every candidate layout, alternated
    python bench.py --precision              # one training step in fp32, bf16 and fp16 on this machine
    python bench.py --gpu-suite              # on one GPU: the full-size architecture in bf16, every lesson
    python bench.py --generation             # + generation tokens/s: base, LoRA, merged LoRA, batched
    python bench.py --memory /tmp/bloom-1b4-random   # + peak RSS while loading the full-size architecture
    python bench.py --kbit-memory /tmp/bloom-1b4-random   # only: peak RSS of a LoRA step, fp32/nf4/int8 base

Every training run is its own process (its peak memory is its own; "whole process" times include importing
the libraries and loading the model) on the same rows for the same number of samples at the lesson's learning
rate. Runs being compared alternate (A B A B ...), so a change in the machine's load hits both alike; each
figure is the median of the repeats, with the lowest and highest in brackets, and the 1-minute load average
is printed before and after. A comparison made while other programs use the cores measures those programs:
run it on a quiet machine. Unknown flags go to every run (e.g. --bf16 true on a GPU).

Useful FLOPs (measure/flops.py) count what a training step must compute, padding not counted; the limit is the
best FLOP/s `torch.mm` reaches at the model's weight shapes on this machine (measure/gemm.py). The code lives in
the measure/ package; this file parses the command line and dispatches.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common.errors import UserError, run_cli
from common.lessons import LESSONS
from measure import layouts, machine, rows
from measure.process import run_in_process

SMALL_MODEL = dict(hidden_size=256, n_layer=4, n_head=4)


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model_name_or_path", help="model to train (default: a small random BLOOM built here, hidden 256, 4 layers)")
    add("--dataset", help="train on these rows as they are (default: real-length rows built from the sample data)")
    add("--lessons", nargs="+", choices=list(LESSONS), default=list(LESSONS), help="default: all")
    add("--repeats", type=int, default=3, help="alternated runs of each layout (default 3)")
    add(
        "--layouts",
        action="store_true",
        help=f"compare every candidate layout ({', '.join(layouts.CANDIDATE_LAYOUTS)}) instead of course vs defaults",
    )
    add("--samples", type=int, default=96, help="training rows (one epoch) per run")
    add("--eval_rows", type=int, default=32, help="held-out rows for the eval loss")
    add("--precision", action="store_true", help="time one training step in fp32, bf16 and fp16")
    add("--gpu-suite", dest="gpu_suite", action="store_true", help="the one-GPU suite (see above)")
    add("--suite_steps", type=int, default=20, help="optimizer steps per run in the GPU suite")
    add("--peak_tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    add("--generation", action="store_true", help="also measure generation tokens/s")
    add("--gen_tokens", type=int, default=32, help="new tokens per answer with --generation")
    add(
        "--memory",
        metavar="DIR",
        help="write the full-size architecture with random weights to DIR (once, ~5 GB), "
        "measure peak RSS while loading it",
    )
    add("--kbit-memory", dest="kbit_memory", metavar="DIR", help="lesson 08's memory mode (measure/kbit_memory.py)")
    add("--seed", type=int, default=42)
    add("--output_dir", help="keep the runs here (default: a temporary folder)")
    args, extra = parser.parse_known_args(argv)
    clash = [f for f in extra if f.split("=")[0] in layouts.LAYOUT_FLAGS]
    if clash:
        raise UserError(f"{clash[0]} is set by the benchmark itself (it compares batch layouts); drop it")
    if args.samples < layouts.EFFECTIVE_BATCH or args.samples % layouts.EFFECTIVE_BATCH:
        raise UserError(f"--samples must be a positive multiple of {layouts.EFFECTIVE_BATCH}")
    if args.repeats < 1 or args.suite_steps < 2:
        raise UserError("--repeats must be 1 or more and --suite_steps 2 or more")
    return args, extra  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args, extra = parse(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(args.output_dir or tmp)
        before = machine.load_line("before")
        if args.gpu_suite:
            from measure.gpu_suite import gpu_suite

            machine.warn_if_busy(*before)
            gpu_suite(args, work, extra)
            machine.warn_if_busy(*machine.load_line("after"))
            return
        if args.kbit_memory:
            from measure.kbit_memory import kbit_memory

            return kbit_memory(args, work)
        from common.models import load_tokenizer
        from common.tiny_model import build_tiny_model

        model, model_label = args.model_name_or_path, args.model_name_or_path
        if model is None:
            model = str(build_tiny_model(work / "small-bloom", **SMALL_MODEL))
            model_label = "small random BLOOM (hidden 256, 4 layers, 4 heads, vocab 2000; repo's tiny tokenizer)"
        tokenizer = load_tokenizer(model)
        train_file, eval_file, data_label = rows.write_rows(args, tokenizer, work / "data")
        print(f"bench: {machine.describe_machine()}\nmodel: {model_label}")
        machine.warn_if_busy(*before)
        if args.precision:
            from measure.precision import print_precision

            spec = {"model": model, "data": str(train_file), "repeats": args.repeats}
            print_precision(model_label, run_in_process("measure.precision:precision_step_times", spec,
                                                        work / "precision.log"))  # fmt: skip
        else:
            layouts.compare_layouts(args, model, train_file, eval_file, data_label, extra, work)
        if args.memory:
            from measure.memory import measure_memory

            measure_memory(Path(args.memory), tokenizer, work)
        if args.generation:
            from measure.generation import print_generation

            spec = {"model": model, "tokens": args.gen_tokens}
            figures = run_in_process("measure.generation:generation_speed", spec, work / "generation.log")
            print_generation(model_label, args.gen_tokens, figures)
        machine.warn_if_busy(*machine.load_line("after"))
    print(f"\nbench took {time.time() - started:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
