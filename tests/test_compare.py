"""compare.py: the count table (checked against docs/compare.md, so the docs cannot drift) and the --train report."""

import json
import re
import subprocess
import sys

import pytest
from helpers import COURSE_COUNTS, ROOT

from measure.counts import count_table, count_variants


def compare(*argv):
    """compare.py as a user runs it: its own process."""
    return subprocess.run([sys.executable, str(ROOT / "compare.py"), *argv], capture_output=True, text=True)


def test_count_table_equals_the_course_table(real_architecture_dir):
    rows = count_variants(str(real_architecture_dir))
    assert [r["variant"] for r in rows] == list(COURSE_COUNTS)
    for row in rows:
        assert (row["trainable_params"], row["all_params"]) == COURSE_COUNTS[row["variant"]], row["variant"]


def test_docs_show_exactly_what_compare_prints(real_architecture_dir):
    doc = (ROOT / "docs" / "compare.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- compare-table:start -->\n(.*?)\n<!-- compare-table:end -->", doc, re.S)
    assert block, "docs/compare.md lacks the compare table markers"
    table = count_table(count_variants(str(real_architecture_dir)))
    assert block.group(1).strip() == table


# one variant of each artifact kind (BitFit's own file, a prompt, a prefix, LoRA with a trained embedding copy):
# every variant's training itself is tested in test_lessons.py; this test is about the report
REPORT_VARIANTS = ["bitfit", "prompt_random", "prefix_proj", "lora_regex_emb"]


@pytest.mark.slow
def test_train_report_has_every_file_and_field(tiny_model_dir, overfit_file, tmp_path):
    out = tmp_path / "report"
    done = compare(
        "--model_name_or_path",
        str(tiny_model_dir),
        "--train",
        "--dataset",
        str(ROOT / "data" / "alpaca_sample_zh.json"),
        "--max_steps",
        "3",
        "--output_dir",
        str(out),
        "--max_new_tokens",
        "4",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--variants",
        *REPORT_VARIANTS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [r["variant"] for r in report["variants"]] == REPORT_VARIANTS
    fields = ["trainable_params", "all_params", "trainable_percent", "adapter_size_bytes", "peak_memory_mb",
              "train_samples_per_second", "train_tokens_per_second", "wall_time_s", "final_train_loss", "eval_loss",
              "eval_perplexity", "loss_curve", "answer"]  # fmt: skip
    for row in report["variants"]:
        for field in fields:
            assert row.get(field) is not None, (row["variant"], field)
        assert row["adapter_size_bytes"] > 0 and row["peak_memory_mb"] > 0 and row["loss_curve"]
    md = (out / "report.md").read_text(encoding="utf-8")
    for row in report["variants"]:
        assert row["label"] in md
    import matplotlib.image

    for name in ["loss_curves.png", "params_vs_eval_loss.png", "peak_memory.png"]:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(out / name).shape[0] > 100
        assert f"]({name})" in md


def test_unknown_flags_are_refused_without_train():
    done = compare("--epochs", "3")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unrecognized arguments: --epochs 3 (only with --train are extra flags passed on to train.py)"
    ]
