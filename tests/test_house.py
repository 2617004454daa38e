"""The rules of the house that keep the code easy to read: small files in common/, light imports, one lesson
table, test modules that do not lean on each other."""

import ast
import subprocess
import sys

import pytest
from helpers import ROOT

from common.lessons import LESSON_OF_METHOD, LESSONS, VARIANTS, lesson_module

MAX_LINES = 250
# what needs torch at import, by its nature: a Trainer subclass, modules holding nn.Module fields
HEAVY = {"trainer", "check_by_hand"}


def test_common_files_stay_small():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in (ROOT / "common").glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_common_modules_import_no_ml_library():
    """Importing common's modules is cheap: torch, transformers, peft and gradio load only when used."""
    light = sorted(p.stem for p in (ROOT / "common").glob("*.py") if p.stem not in HEAVY | {"__init__"})
    code = "import sys\n" + "".join(f"import common.{name}\n" for name in light)
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


def test_the_lesson_table_names_every_lesson_folder_and_method():
    assert sorted(LESSONS.values()) == sorted(p.parent.name for p in ROOT.glob("0*/train.py"))
    assert {spec.lesson for spec in VARIANTS.values()} == set(LESSONS) == set(LESSON_OF_METHOD.values())
    for lesson in LESSONS:  # each infer.py declares the method its lesson saves
        assert LESSON_OF_METHOD[lesson_module(lesson, "infer").METHOD] == lesson


def test_the_loader_loads_each_script_once_and_refuses_unknown_lessons():
    assert lesson_module("05", "train") is lesson_module("05-chatbot_lora", "train")
    with pytest.raises(KeyError, match="no lesson '07'"):
        lesson_module("07", "train")


def test_lesson_main_shows_the_process_setup_and_the_seed_before_the_method():
    """Step 1 of main(): parse, then the processes, then the seed with its reason; the method comes later."""
    main = (ROOT / LESSONS["05"] / "train.py").read_text(encoding="utf-8").split("\ndef main")[1]
    steps = ["parse_train_args(", "setup_processes(training_args)", "set_seed(training_args.seed)  # before step 5",
             "add_method(model"]  # fmt: skip
    positions = [main.index(step) for step in steps]
    assert positions == sorted(positions)
