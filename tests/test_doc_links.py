"""The course's Markdown pages: every relative link and image resolves, and the entry page stays short."""

import re
import subprocess

import pytest
from helpers import ROOT

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return sorted(path for path in listed if (ROOT / path).is_file())


@pytest.mark.parametrize("page", markdown_files())
def test_relative_links_resolve(page):
    path = ROOT / page
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)  # links inside code are examples
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # web links and in-page anchors
        if not (path.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page}: {broken}"


def test_top_readme_is_course_sized():
    assert len((ROOT / "README.md").read_bytes()) <= 15_000
