"""The rules of the house that keep the code easy to read: small files in common/ and measure/, light imports,
one lesson registry and its contract, test modules that lean neither on each other nor on the top-level scripts."""

import ast
import subprocess
import sys

import pytest
from helpers import ROOT

from common.lessons import LESSON_OF_METHOD, LESSONS, REGISTRY, VARIANTS, contract_gaps, lesson_module

MAX_LINES = 250
PACKAGES = ("common", "measure")
# what needs torch at import, by its nature: a Trainer subclass or callbacks, modules holding nn.Module fields
HEAVY = {"common.checkpoints", "common.check_by_hand", "measure.callbacks"}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_files_stay_small(package):
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in (ROOT / package).glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_top_level_scripts_stay_thin():
    """bench.py and compare.py parse, dispatch and print; their code lives in measure/."""
    for script in ("bench.py", "compare.py"):
        assert len((ROOT / script).read_text(encoding="utf-8").splitlines()) <= 130, script


@pytest.mark.parametrize("package", PACKAGES)
def test_package_modules_import_no_ml_library(package):
    """Importing the packages' modules is cheap: torch, transformers, peft and gradio load only when used."""
    names = (f"{package}.{p.stem}" for p in (ROOT / package).glob("*.py") if p.stem != "__init__")
    light = sorted(name for name in names if name not in HEAVY)
    code = "import sys\n" + "".join(f"import {name}\n" for name in light)
    code += "print(sorted(m for m in ('torch', 'transformers', 'peft', 'gradio', 'datasets') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", f"imported at import time: {done.stdout}"


def test_no_test_module_imports_another():
    """Shared test code lives in tests/helpers.py and tests/conftest.py."""
    test_modules = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    for path in (ROOT / "tests").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        assert not set(names) & test_modules, f"{path.name} imports {sorted(set(names) & test_modules)}"
        assert not set(names) & {"bench", "compare"}, f"{path.name} imports a top-level script; use measure/"


def test_the_lesson_table_names_every_lesson_folder_and_method():
    assert sorted(LESSONS.values()) == sorted(p.parent.name for p in ROOT.glob("0*/train.py"))
    assert {spec.lesson for spec in VARIANTS.values()} == set(LESSONS) == set(LESSON_OF_METHOD.values())
    for lesson in LESSONS:  # each infer.py declares the method its lesson saves
        assert LESSON_OF_METHOD[lesson_module(lesson, "infer").METHOD] == lesson


@pytest.mark.parametrize("lesson", [lesson.number for lesson in REGISTRY])
def test_every_lesson_keeps_the_contract(lesson):
    """What train.py, infer.py and from_scratch.py define (common.lessons.CONTRACT); the message names what is
    missing, for the author of a new lesson."""
    assert contract_gaps(lesson) == []


def test_the_contract_check_names_what_is_missing(tmp_path, monkeypatch):
    """A lesson folder with an incomplete train.py and no other script: every gap is named."""
    from common import lessons

    folder = tmp_path / "09-chatbot_new"
    folder.mkdir()
    (folder / "train.py").write_text("LEARNING_RATE = 1e-3\ndef main(argv=None):\n    pass\n", encoding="utf-8")
    monkeypatch.setattr(lessons, "ROOT", tmp_path)
    monkeypatch.setitem(lessons.LESSONS, "09", folder.name)
    try:
        gaps = contract_gaps("09")
    finally:
        sys.modules.pop("lesson09_train", None)
    assert "train.py does not define add_method: step 5: the base model with the method added" in gaps
    assert any(g.startswith("train.py: main('argv',) should take ('argv', 'callbacks')") for g in gaps)
    assert "infer.py is missing" in gaps and "from_scratch.py is missing" in gaps


def test_one_registry_line_per_lesson():
    assert [lesson.number for lesson in REGISTRY] == sorted(p.name[:2] for p in ROOT.glob("0*-chatbot_*"))
    methods = [lesson.method for lesson in REGISTRY if lesson.method]
    assert len(set(methods)) == len(methods) == len(LESSONS)


def test_the_loader_loads_each_script_once_and_refuses_unknown_lessons():
    assert lesson_module("05", "train") is lesson_module("05-chatbot_lora", "train")
    with pytest.raises(KeyError, match="no lesson '09'"):
        lesson_module("09", "train")


def test_lesson_main_shows_the_process_setup_and_the_seed_before_the_method():
    """Step 1 of main(): parse, then the processes, then the seed with its reason; the method comes later."""
    main = (ROOT / LESSONS["05"] / "train.py").read_text(encoding="utf-8").split("\ndef main")[1]
    steps = ["parse_train_args(", "setup_processes(training_args)", "set_seed(training_args.seed)  # before step 5",
             "add_method(model"]  # fmt: skip
    positions = [main.index(step) for step in steps]
    assert positions == sorted(positions)
