"""compare.py --train with held-out questions: a learning-rate sweep scored by answers, and reuse of finished runs."""

import json
import subprocess
import sys

import pytest
from helpers import ROOT

from mini_world.generate import read_jsonl

pytestmark = pytest.mark.slow  # trains four runs in subprocesses


def test_sweep_report_scores_answers_and_reuses_finished_runs(tmp_path):
    def compare(argv):
        done = subprocess.run([sys.executable, str(ROOT / "compare.py"), *argv], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    def head(name: str, n: int):
        path = tmp_path / name
        rows = read_jsonl(ROOT / "data" / "world" / name)[:n]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path

    questions, bios = head("qa_test.jsonl", 12), head("bios_held_out.jsonl", 4)
    argv = ["--train", "--model_name_or_path", str(ROOT / "models/mini-bloom-zh"),
            "--dataset", str(ROOT / "data/world/qa_train.jsonl"), "--eval_dataset", str(questions),
            "--held_out_text", str(bios), "--variants", "lora_qkv", "prefix", "--lr_factors", "1", "10",
            "--max_steps", "4", "--output_dir", str(tmp_path / "report"), "--per_device_train_batch_size", "4",
            "--gradient_accumulation_steps", "1"]  # fmt: skip
    compare(argv)
    report = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    runs = report["runs"]
    assert len(runs) == 4
    assert sorted(r["learning_rate"] for r in runs if r["variant"] == "lora_qkv") == pytest.approx([2e-4, 2e-3])
    for r in runs:
        assert 0 <= r["exact_match"] <= 1 and 0 <= r["rouge_l"] <= 1 and r["lm_loss"] > 0
    assert report["base"]["exact_match"] == 0.0
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Best learning rate per variant" in text and "forgetting" in text
    for png in ("em_vs_params.png", "em_vs_time.png", "lr_sweep.png"):
        assert (tmp_path / "report" / png).stat().st_size > 0

    log = compare(argv)  # same command again: every run is reused, none retrained
    assert log.count("reusing the finished run") == 4
    assert json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))["runs"] == runs
