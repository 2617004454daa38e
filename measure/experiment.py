"""The mini-world comparison as an experiment: learning rates picked on validation people, grids extended until the
best rate is inside, several seeds at the picked rate, equal-budget controls, and a data-size axis.

    plan -> rounds of runs (each: train + score in its own process) -> runs/<name>/record.json -> the report

Every run trains one arm (a course variant, possibly with extra flags) at one learning rate, seed and number of
training people, then answers four question sets (mini_world.wordings): validation people, test people in
trained wordings, test people in new wordings, training people. A run folder that already holds the record of the
same run is reused, so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common.lessons import ROOT, VARIANTS
from mini_world.wordings import WORDINGS_DIR

from .process import run_in_process

SCORED_SETS = ("val", "test_trained_wordings", "test_new_wordings", "train_people")
RECORD = "record.json"


@dataclass(frozen=True)
class Arm:
    """One line of the comparison: a course variant, extra train.py flags, and where its rate search starts
    (`start`: k in lr = 10 ** (k / 2), a half-decade grid; the start is a guess, validation decides)."""

    variant: str
    start: int
    flags: tuple[str, ...] = ()
    control_of: str | None = None  # the arm this one is an equal-budget control for
    label: str = ""

    def title(self) -> str:
        return self.label or VARIANTS[self.variant].label


ARMS = {
    "bitfit": Arm("bitfit", -3),
    "prompt_text": Arm("prompt_text", -3),
    "prompt_random": Arm("prompt_random", -1),
    "prompt_text_10": Arm(
        "prompt_text", -3, ("--num_virtual_tokens", "10"), "prompt_random", "prompt tuning, text init cut to 10 tokens"
    ),  # fmt: skip
    "ptuning_mlp": Arm("ptuning_mlp", -5),
    "ptuning_lstm": Arm("ptuning_lstm", -4),
    "prefix": Arm("prefix", -2),
    "prefix_proj": Arm("prefix_proj", -4),
    "lora_qkv": Arm("lora_qkv", -5),
    "lora_qkv_r18": Arm(
        "lora_qkv",
        -5,
        ("--lora_r", "18", "--lora_alpha", "36"),
        "lora_qkv_dense",
        "LoRA r=18, query_key_value (the parameters of + dense_4h_to_h)",
    ),  # fmt: skip
    "lora_qkv_dense": Arm("lora_qkv_dense", -5),
    "lora_regex_emb": Arm("lora_regex_emb", -5),
    "ia3": Arm("ia3", -2),
    "qlora_nf4": Arm("qlora_nf4", -5),
    "lora_int8": Arm("lora_int8", -5),
}
DATA_SIZE_ARMS = ("bitfit", "lora_qkv")


def rate(k: int) -> float:
    return float(f"{10 ** (k / 2):.3g}")  # 1e-3, 3.16e-3, 1e-2, ...


def run_name(arm: str, k: int, seed: int, n_people: int) -> str:
    return f"{arm}-lr{rate(k):.3g}-s{seed}" + (f"-p{n_people}" if n_people else "")


def portable(arg: str, run_dir: Path) -> str:
    """A command-line argument as the run's record keeps it: the same on every checkout of the repository."""
    if arg == str(run_dir):
        return "<run_dir>"
    return arg[len(str(ROOT)) + 1 :] if arg.startswith(str(ROOT) + os.sep) else arg


def selection_key(record: dict) -> tuple:
    """Validation exact match, then validation ROUGE-L (so a grid where nothing answers exactly still has a
    best rate), then the lower rate."""
    val = record["scores"]["val"]
    return (val["exact_match"], val["rouge_l"], -record["learning_rate"])


def pick(records: list[dict]) -> dict:
    return max(records, key=selection_key)


def grid_extension(records: list[dict], max_points: int) -> int | None:
    """The next k to try for one arm (seed 0), or None when its best rate is inside the grid or the grid is full."""
    ks = sorted(r["k"] for r in records)
    best = pick(records)["k"]
    if len(ks) >= max_points:
        return None
    if best == ks[0]:
        return ks[0] - 1
    if best == ks[-1]:
        return ks[-1] + 1
    return None


def score_all(model, tokenizer, held_out_text: str, questions_dir: str) -> dict:
    """Exact match, ROUGE-L and BLEU-4 on every question set, and the LM loss on held-out biographies."""
    from mini_world.generate import read_jsonl

    from .scoring import lm_loss, score_model

    folder = Path(questions_dir)
    scores = {name: score_model(model, tokenizer, read_jsonl(folder / f"{name}.jsonl")) for name in SCORED_SETS}
    for scored in scores.values():
        scored.pop("answers")  # rerun a run to see its answers: kept, they would make each record ~100 KB
    bios = [r["text"] for r in read_jsonl(Path(held_out_text))]
    return {"scores": scores, "lm_loss": lm_loss(model, tokenizer, bios)}


def train_and_score(spec: dict) -> dict:
    """In the child process: train one run through its lesson's main(), then score it through its lesson's
    infer.py (what a user's `infer.py` would load)."""
    from common.lessons import lesson_module

    from .lesson_runs import train_one

    figures = train_one({"lesson": spec["lesson"], "argv": spec["argv"], "tag": spec["tag"]}, record_steps=False)
    model, tokenizer = lesson_module(spec["lesson"], "infer").load_for_inference(spec["output_dir"])
    scores = score_all(model, tokenizer, spec["held_out_text"], spec.get("questions_dir", str(WORDINGS_DIR)))
    return {"trainable_params": figures["trainable_params"], "train_runtime_s": figures["train_runtime"],
            "final_train_loss": figures["train_loss"], **scores}  # fmt: skip


def score_base(spec: dict) -> dict:
    """In the child process: the untrained base model, scored like every run."""
    from common.models import load_base_model, load_tokenizer

    model, tokenizer = load_base_model(spec["model"]), load_tokenizer(spec["model"])
    return score_all(model, tokenizer, spec["held_out_text"], spec["questions_dir"])


class Experiment:
    """Runs (arm, k, seed, n_people) jobs `jobs` at a time and keeps their records."""

    def __init__(self, args, out_dir: Path):
        self.args, self.out_dir, self.started = args, out_dir, time.time()
        self.records: list[dict] = []

    def data_file(self, n_people: int) -> Path:
        """The training file of a run: the full one, or the subset `write_subsets` wrote for `n_people`."""
        if not n_people:
            return Path(self.args.questions_dir) / "train.jsonl"
        return self.out_dir / "data" / f"train_{n_people}_people.jsonl"

    def write_subsets(self, sizes: list[int]) -> None:
        """Each data-size training file, written once before any run reads it (runs go in parallel)."""
        from mini_world.generate import read_jsonl
        from mini_world.wordings import people_subset

        full = read_jsonl(self.data_file(0))
        for n in sizes:
            path = self.data_file(n)
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = people_subset(full, n)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    def run_one(self, job: tuple, tag: str) -> dict:
        arm_name, k, seed, n_people = job
        arm, a = ARMS[arm_name], self.args
        run_dir = self.out_dir / "runs" / run_name(*job)
        argv = ["--model_name_or_path", a.model_name_or_path, "--dataset", str(self.data_file(n_people)),
                "--output_dir", str(run_dir), "--max_steps", str(a.max_steps), "--learning_rate", str(rate(k)),
                "--seed", str(seed), "--save_strategy", "no", "--disable_tqdm", "true",
                "--logging_steps", str(max(1, a.max_steps // 10)),
                "--per_device_train_batch_size", str(a.batch_size), "--gradient_accumulation_steps", "1",
                *VARIANTS[arm.variant].flags, *arm.flags]  # fmt: skip
        config = {"arm": arm_name, "k": k, "learning_rate": rate(k), "seed": seed, "n_people": n_people,
                  "command": [portable(a, run_dir) for a in argv]}  # fmt: skip
        record_file = run_dir / RECORD
        if record_file.is_file():
            saved = json.loads(record_file.read_text(encoding="utf-8"))
            if {key: saved.get(key) for key in config} == config:
                return saved
        spec = {"lesson": VARIANTS[arm.variant].lesson, "argv": argv, "tag": tag, "output_dir": str(run_dir),
                "held_out_text": a.held_out_text, "questions_dir": a.questions_dir}  # fmt: skip
        start = time.time()
        threads = max(1, (os.cpu_count() or 1) // a.jobs)
        result = run_in_process("measure.experiment:train_and_score", spec, run_dir / "train.log", threads=threads)
        record = {**config, **result, "wall_time_s": round(time.time() - start, 1)}
        record_file.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
        return record

    def run(self, jobs: list[tuple], stage: str) -> list[dict]:
        """The records of `jobs`, run `args.jobs` at a time; progress on stderr."""

        def one(item):
            i, job = item
            record = self.run_one(job, f"{stage} {i}/{len(jobs)} {run_name(*job)}")
            em = record["scores"]["val"]["exact_match"]
            print(f"[{stage} {i}/{len(jobs)}] {run_name(*job)}: validation exact match {em:.1%} "
                  f"({time.time() - self.started:.0f}s elapsed)", file=sys.stderr, flush=True)  # fmt: skip
            return record

        with ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
            done = list(pool.map(one, enumerate(jobs, 1)))
        self.records += done
        return done

    def search_rates(self, arms: list[str]) -> dict[str, dict]:
        """Seed-0 grids of three rates around each arm's start, extended round by round until each arm's best
        validation rate has a tried rate on both sides (or `max_points` rates were tried)."""
        jobs = [(arm, ARMS[arm].start + d, 0, 0) for arm in arms for d in (-1, 0, 1)]
        grids: dict[str, list[dict]] = {arm: [] for arm in arms}
        round_no = 1
        while jobs:
            for r in self.run(jobs, f"rates round {round_no}"):
                grids[r["arm"]].append(r)
            jobs = [(arm, k, 0, 0) for arm in arms
                    if (k := grid_extension(grids[arm], self.args.max_points)) is not None]  # fmt: skip
            round_no += 1
        return {arm: pick(grids[arm]) for arm in arms}

    def run_all(self, arms: list[str], seeds: int, sizes: list[int]) -> dict:
        best = self.search_rates(arms)
        self.write_subsets(sizes)
        jobs = [(arm, best[arm]["k"], s, 0) for arm in arms for s in range(1, seeds)]
        jobs += [(arm, best[arm]["k"], s, n) for arm in DATA_SIZE_ARMS if arm in arms for n in sizes
                 for s in range(seeds)]  # fmt: skip
        self.run(jobs, "seeds and data size")
        return {arm: best[arm]["k"] for arm in arms}


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd
