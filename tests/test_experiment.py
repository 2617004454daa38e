"""experiment.py and its report: the rate search stops only with the best rate inside its grid, the picked rate
is the validation best, and the committed report holds seeds and spread for every arm."""

import json
import subprocess
import sys

import pytest
from helpers import ROOT

from common.lessons import VARIANTS
from measure.experiment import ARMS, grid_extension, mean_sd, pick, rate, selection_key
from mini_world.wordings import SETS, WORDINGS_DIR

REPORT = ROOT / "docs" / "mini_world_experiment" / "report.json"
COLUMNS = ("test_trained_wordings", "test_new_wordings", "train_people")


def record(k, em, rouge=0.5):
    return {"k": k, "learning_rate": rate(k), "scores": {"val": {"exact_match": em, "rouge_l": rouge}}}


def test_grid_grows_toward_the_best_edge_and_stops_when_the_best_is_inside():
    assert grid_extension([record(-3, 0.1), record(-2, 0.2), record(-1, 0.3)], max_points=7) == 0
    assert grid_extension([record(-3, 0.3), record(-2, 0.2), record(-1, 0.1)], max_points=7) == -4
    assert grid_extension([record(-3, 0.1), record(-2, 0.3), record(-1, 0.1)], max_points=7) is None
    assert grid_extension([record(k, 0.1 * k) for k in range(1, 4)], max_points=3) is None  # full


def test_validation_picks_exact_match_then_rouge_then_the_lower_rate():
    assert pick([record(-3, 0.2), record(-2, 0.3)])["k"] == -2
    assert pick([record(-3, 0.0, 0.2), record(-2, 0.0, 0.4)])["k"] == -2
    assert pick([record(-3, 0.3), record(-2, 0.3)])["k"] == -3
    assert mean_sd([1.0, 3.0]) == pytest.approx((2.0, 2**0.5))


def test_seed0_gap_is_seed_0_minus_its_reruns_in_points_averaged_over_arms():
    from measure.experiment_report import seed0_gap

    def run(arm, seed, val, test, k=-2):
        scores = {"val": {"exact_match": val}, "test_trained_wordings": {"exact_match": test}}
        return {"arm": arm, "k": k, "seed": seed, "n_people": 0, "scores": scores}

    records = [run("a", 0, 0.5, 0.4), run("a", 1, 0.3, 0.4), run("a", 2, 0.1, 0.4), run("a", 0, 0.9, 0.9, k=-3),
               run("b", 0, 0.2, 0.1), run("b", 1, 0.2, 0.3)]  # fmt: skip
    gap = seed0_gap(records, {"a": -2, "b": -2})
    assert gap["val"] == pytest.approx((30 + 0) / 2)
    assert gap["test_trained_wordings"] == pytest.approx((0 - 20) / 2)


@pytest.mark.skipif(not REPORT.is_file(), reason="the experiment report is not committed yet")
def test_committed_report_picks_rates_on_validation_inside_their_grids_with_three_seeds():
    report = json.loads(REPORT.read_text(encoding="utf-8"))
    runs = [r for r in report["runs"] if not r["n_people"]]
    assert set(report["arms"]) == set(ARMS)
    for arm, summary in report["arms"].items():
        grid = [r for r in runs if r["arm"] == arm and r["seed"] == 0]
        best = max(grid, key=selection_key)
        assert summary["learning_rate"] == best["learning_rate"], f"{arm}: not the validation best"
        ks = sorted(r["k"] for r in grid)
        assert ks[0] < best["k"] < ks[-1], f"{arm}: the picked rate is at the edge of its grid"
        at_rate = [r for r in runs if r["arm"] == arm and r["k"] == best["k"]]
        assert len(at_rate) >= 3 and summary["seeds"] == sorted(r["seed"] for r in at_rate)
        for column in COLUMNS:
            m, sd = mean_sd([r["scores"][column]["exact_match"] for r in at_rate])
            assert summary[column] == pytest.approx([m, sd]), f"{arm} {column}: the summary is not its runs'"
    for arm, by_size in report["data_size"].items():
        assert len(by_size) >= 3 and all(s["seeds"] >= 3 for s in by_size.values()), arm


@pytest.mark.slow  # four runs on the tiny model, each in its own process
def test_experiment_runs_reports_and_reuses_finished_runs(tiny_model_dir, tmp_path):
    questions = tmp_path / "questions"
    questions.mkdir()
    for name in ("train", *SETS[1:]):
        lines = (WORDINGS_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        keep = lines[:48] if name == "train" else lines[:6]  # train: two people
        (questions / f"{name}.jsonl").write_text("\n".join(keep) + "\n", encoding="utf-8")
    bios = tmp_path / "bios.jsonl"
    bios.write_text("\n".join((ROOT / "data/world/bios_held_out.jsonl").read_text(encoding="utf-8").splitlines()[:3]))
    out = tmp_path / "exp"
    argv = [sys.executable, str(ROOT / "experiment.py"), "--model_name_or_path", str(tiny_model_dir),
            "--arms", "bitfit", "--seeds", "1", "--sizes", "1", "--max_points", "3", "--max_steps", "2",
            "--jobs", "1", "--questions_dir", str(questions), "--held_out_text", str(bios),
            "--output_dir", str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert len(report["runs"]) == 3 + 1  # the grid, and one data size (seed 0 only)
    assert report["arms"]["bitfit"]["seeds"] == [0]
    assert set(report["data_size"]["bitfit"]) == {"1", "40"}
    logs = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/train.log")}
    again = subprocess.run(argv, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/train.log")} == logs, "finished runs were rerun"
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["runs"] == report["runs"]
    assert (out / "report.md").read_text(encoding="utf-8").count("±") > 10


@pytest.mark.parametrize(
    "flags, message",
    [(["--sizes", "40"], "--sizes"), (["--questions_dir", "nowhere"], "nowhere"), (["--max_points", "2"], "at least")],
)
def test_bad_input_is_one_error_line_and_exit_2(flags, message, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "experiment.py"), *flags, "--output_dir", str(tmp_path / "o")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert not (tmp_path / "o").exists()


def lesson_arms(lesson: str) -> list[str]:
    return [name for name, arm in ARMS.items() if VARIANTS[arm.variant].lesson == lesson]


@pytest.mark.parametrize("lesson", sorted({VARIANTS[arm.variant].lesson for arm in ARMS.values()}))
def test_each_lesson_shows_its_arms_exactly_as_the_report_prints_them(lesson):
    """A lesson's experiment block is `experiment.py --table --arms <its arms>` and what that prints."""
    import re
    import shlex

    from common.lessons import LESSONS
    from measure.experiment_report import table

    text = (ROOT / LESSONS[lesson] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- experiment:start -->(.*?)<!-- experiment:end -->", text, re.S)
    assert block, f"{LESSONS[lesson]}/README.md has no experiment block"
    lines = block.group(1).strip().strip("`").strip().splitlines()
    command = shlex.split(lines[0].removeprefix("$ "))
    assert command[:4] == ["python", "experiment.py", "--table", "--arms"]
    assert set(command[4:]) == set(lesson_arms(lesson)), "the block must show every arm of the lesson"
    assert "\n".join(lines[1:]).strip() == table(REPORT, command[4:])
