"""The mini-world comparison as an experiment: rates picked on validation people, several seeds, controls.

    OMP_NUM_THREADS=1 python experiment.py --jobs 2      # every arm: 36+ minutes on 2 cores; writes
                                                         # docs/mini_world_experiment/report.md
    python experiment.py --arms bitfit lora_qkv --seeds 3 --sizes --output_dir /tmp/exp    # a part of it
    python experiment.py --table --arms bitfit                # print rows of the written report (no training)

Each arm's learning rate is searched on a half-decade grid, scored on validation people, until the best rate has
a tried rate on both sides; then more seeds run at that rate; BitFit and LoRA also train on fewer people. Every
run is scored on new people in trained wordings, new people in new wordings and the training people
(mini_world.wordings), and for forgetting. Rerunning the command reuses finished runs (a crash loses at most the
runs in flight) and rewrites the report. The code lives in measure/experiment.py and measure/experiment_report.py.
"""

import argparse
import sys
import time
from pathlib import Path

from common.errors import UserError, run_cli
from common.lessons import ROOT
from measure.experiment import ARMS, DATA_SIZE_ARMS, SCORED_SETS
from mini_world.wordings import WORDINGS_DIR


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add(
        "--arms",
        nargs="+",
        choices=list(ARMS),
        default=list(ARMS),
        metavar="ARM",
        help=f"which arms (default: all): {', '.join(ARMS)}",
    )
    add("--table", action="store_true", help="only print the main table's rows for --arms from the written report")
    add("--seeds", type=int, default=3, help="seeds at each arm's picked rate (seed 0 is the rate search's run)")
    add(
        "--sizes",
        nargs="*",
        type=int,
        default=[5, 10, 20],
        help=f"also train {', '.join(DATA_SIZE_ARMS)} on this many of the 40 training people (none: skip)",
    )
    add("--max_points", type=int, default=7, help="most learning rates tried per arm")
    add("--max_steps", type=int, default=300, help="optimizer steps per run")
    add("--batch_size", type=int, default=8, help="rows per optimizer step")
    add("--jobs", type=int, default=2, help="runs at a time (each gets cores / jobs torch threads)")
    add("--model_name_or_path", default="models/mini-bloom-zh")
    add("--held_out_text", default="data/world/bios_held_out.jsonl", help="biographies never trained on (forgetting)")
    add(
        "--questions_dir",
        default=str(WORDINGS_DIR),
        help="train.jsonl and the scored question sets, as python -m mini_world.wordings writes them",
    )
    add("--output_dir", default=str(ROOT / "docs" / "mini_world_experiment"))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.seeds < 1 or args.jobs < 1 or args.max_steps < 1 or args.max_points < 3:
        raise UserError("--seeds, --jobs and --max_steps must be at least 1, --max_points at least 3")
    if any(not 0 < n < 40 for n in args.sizes):
        raise UserError("--sizes must be between 1 and 39 (the full 40 people is the main run)")
    for path in (
        args.model_name_or_path,
        args.held_out_text,
        *(Path(args.questions_dir) / f"{name}.jsonl" for name in ("train", *SCORED_SETS)),
    ):
        if not Path(path).exists():
            raise UserError(f"{path}: no such file or folder")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    from measure import experiment_report

    if args.table:
        print(experiment_report.table(Path(args.output_dir) / "report.json", args.arms))
        return Path(args.output_dir) / "report.json"
    from measure.experiment import Experiment
    from measure.process import run_in_process

    out_dir, started = Path(args.output_dir), time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = {"model": args.model_name_or_path, "held_out_text": args.held_out_text, "questions_dir": args.questions_dir}
    base = run_in_process("measure.experiment:score_base", spec, out_dir / "runs" / "base.log")
    exp = Experiment(args, out_dir)
    best_k = exp.run_all(args.arms, args.seeds, args.sizes)
    path = experiment_report.write(exp.records, best_k, base, out_dir, args)
    print(f"report written to {path} ({time.time() - started:.0f}s)", file=sys.stderr)
    return path


if __name__ == "__main__":
    run_cli(main)
