"""What each lesson's look_inside.py shares: its command line, loading a trained run (through the lesson's own
infer.py) and its bare base model, the held-out questions as prompts, and the figure saved with Agg.

The scripts print the figures they plot, so a README can show them as a checked block; the figure's path goes to
stderr, since it differs between the README and a test's temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.lessons import LESSONS, ROOT, lesson_module

QUESTIONS = ROOT / "data" / "world" / "qa_test.jsonl"  # the 40 held-out people's 240 questions
CJK_FONTS = ["WenQuanYi Micro Hei", "Noto Sans CJK SC", "Source Han Sans SC", "SimHei", "DejaVu Sans"]


def parser(doc: str, lesson: str, runs: str = "", questions: bool = False) -> argparse.ArgumentParser:
    """--adapter DIR (a run's output folder) and --figure PNG (default: look_inside.png in the lesson folder);
    `runs` describes several --adapter folders where a script compares runs; `questions` adds --questions N."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    nargs = "+" if runs else None
    p.add_argument("--adapter", required=True, nargs=nargs, help=f"a run's output folder{runs}")
    p.add_argument("--figure", default=str(ROOT / LESSONS[lesson] / "look_inside.png"), help="where to write the PNG")
    if questions:
        p.add_argument("--questions", type=int, default=24, help="held-out questions to run through the model")
    return p


def load_run(lesson: str, adapter: str):
    """(trained model in eval mode, tokenizer, the artifact's folder), loaded as the lesson's infer.py loads it."""
    from common.artifacts import resolve_adapter

    infer = lesson_module(lesson, "infer")
    folder = resolve_adapter(adapter, ROOT / LESSONS[lesson], infer.METHOD)
    model, tokenizer = infer.load_for_inference(str(folder))
    return model.eval(), tokenizer, folder


def load_base(folder: Path):
    """The bare base model the artifact in `folder` was trained on, in eval mode."""
    from common.artifacts import artifact_base
    from common.models import load_base_model

    return load_base_model(artifact_base(folder)).eval()


def held_out_prompts(n: int) -> list[str]:
    """The first n held-out questions in the course's prompt format (n // 6 people, all six attributes)."""
    from common.course_template import build_prompt

    rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [build_prompt(r["instruction"], r.get("input", "")) for r in rows[:n]]


def batch(tokenizer, prompts: list[str]):
    """A left-padded batch of prompts, as infer.py builds one (no special tokens added)."""
    tokenizer.padding_side = "left"
    return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)


def pyplot():
    """matplotlib's pyplot on the Agg backend, with a font that has Chinese glyphs where one is installed."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    for path in font_manager.findSystemFonts():  # a font installed after matplotlib cached its font list
        if any(name in Path(path).name.lower() for name in ("wqy", "notosanscjk", "sourcehansans")):
            font_manager.fontManager.addfont(path)
    plt.rcParams["font.sans-serif"] = CJK_FONTS + list(plt.rcParams["font.sans-serif"])
    plt.rcParams["axes.unicode_minus"] = False
    warnings.filterwarnings("ignore", message="(Glyph|findfont)")  # no CJK font installed: boxes, no noise
    return plt


def save_figure(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)
