"""The exercises' reference answers (参考答案) that train: each marked section is run with the commands it shows.

A section between `<!-- exercise:start -->` and `<!-- exercise:end -->` holds one bash block of commands and one
output block with `$ <command>` lines, like the "看它学会" demos (test_demo.py). Every training command writes to its
own output folder, so an answer never depends on which exercise ran before; here each folder becomes a fresh
temporary one. What the output block shows must be what the commands print: the `trainable params` lines exactly,
the loss logs and the evaluator's figures within a tolerance (the last digits depend on the CPU's thread count).
A section may also train with another lesson's train.py and run a lesson's look_inside.py (its figure goes to a
temporary file): what look_inside.py prints is compared line by line by `close_printout`.
"""

import ast
import contextlib
import io
import re
import shlex
import textwrap

import pytest
from helpers import ROOT, evaluator_rows, lesson_module

from common.lessons import LESSONS

LOSS_TOLERANCE = 0.1  # of a logged training loss: 1 vs 2 threads moved the lesson-04 answer by 0.05
SCORE_TOLERANCE = 0.03  # of exact match / ROUGE-L / BLEU-4 (fractions), and of the LM losses and forgetting


def exercise_sections() -> list:
    found = []
    for lesson, folder in LESSONS.items():
        text = (ROOT / folder / "README.md").read_text(encoding="utf-8")
        for number, section in enumerate(re.findall(r"<!-- exercise:start -->(.*?)<!-- exercise:end -->", text, re.S)):
            found.append(pytest.param(lesson, section, id=f"{lesson}-{number + 1}"))
    return found


def commands(section: str) -> list[list[str]]:
    block = section.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def shown_blocks(section: str) -> dict[str, list[str]]:
    """`$ <command>` (continuation lines joined) -> the lines shown after it, from the output block."""
    block = textwrap.dedent(section.split("```bash", 1)[1].split("```", 3)[2])  # list items indent their blocks
    shown, command = {}, None
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith("$ "):
            command = " ".join(line[2:].split())
            shown[command] = []
        elif command and line.strip():
            shown[command].append(line)
    return shown


def scores(lines: list[str]) -> dict[str, list[float]]:
    """{'base': [...], 'trained': [...], 'forgetting': [...]} from the evaluator's table and forgetting line."""
    rows = evaluator_rows(lines)
    for line in lines:
        if line.startswith("forgetting"):
            rows["forgetting"] = [float(line.split()[-1])]
    return rows


def losses(lines: list[str]) -> list[float]:
    return [float(ast.literal_eval(line)["loss"]) for line in lines if line.startswith("{'loss'")]


@pytest.fixture
def one_thread():
    """The answers' commands run with OMP_NUM_THREADS=1 (the thread count changes the order of sums, and so the
    third digit of a loss); run in this process, they get the same single thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize(("lesson", "section"), exercise_sections())
def test_exercise_answer_is_what_its_commands_print(lesson, section, tmp_path, tiny_model_dir, one_thread):
    from mini_world.evaluate import main as evaluate

    folders = {}  # the README's output folder -> a fresh temporary one

    def with_paths(args):
        args = [str(ROOT / a) if a.startswith(("data/", "models/")) else a for a in args]
        args = [str(tiny_model_dir) if a == "tiny-bloom" else a for a in args]
        for flag in ("--output_dir", "--adapter", "--prompt_tuning"):
            i = args.index(flag) + 1 if flag in args else len(args)
            while i < len(args) and not args[i].startswith("--"):  # look_inside.py takes several --adapter folders
                args[i] = str(folders.setdefault(args[i], tmp_path / f"out{len(folders)}"))
                i += 1
        return args

    shown = shown_blocks(section)
    assert shown, f"lesson {lesson}: an exercise section without an output block"
    for words in commands(section):
        start = next(i for i, w in enumerate(words) if w == "python")
        command = " ".join(words)  # as the output block shows it, environment variables included
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            if words[start + 1].endswith(("/train.py", "/look_inside.py")):  # this lesson's or another's
                script, figure = words[start + 1].split("/")[-1][: -len(".py")], ["--figure", str(tmp_path / "f.png")]
                args = with_paths(words[start + 2 :]) + (figure if script == "look_inside" else [])
                lesson_module(words[start + 1].split("/")[0], script).main(args)
            elif words[start + 2] == "mini_world.evaluate":
                evaluate(with_paths(words[start + 3 :]))
            else:
                raise AssertionError(f"an exercise section may only train and evaluate: {command}")
        lines = printed.getvalue().splitlines()
        if command not in shown:
            continue  # run for a later command (e.g. the training before an evaluation), its output not shown
        expected = shown[command]
        if words[start + 1].endswith("/look_inside.py"):
            assert close_printout("\n".join(expected), printed.getvalue()), printed.getvalue()
            continue
        assert [x for x in expected if x.startswith("trainable params")] == [
            x for x in lines if x.startswith("trainable params")
        ]
        if losses(expected):
            assert losses(expected) == pytest.approx(losses(lines), abs=LOSS_TOLERANCE), command
        if scores(expected):
            want, got = scores(expected), scores(lines)
            assert expected[0] == lines[0], command  # how many questions and people
            for row, values in want.items():
                assert values == pytest.approx(got[row][: len(values)], abs=SCORE_TOLERANCE), (command, row)


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def same_printout(expected: str, printed: str) -> bool:
    """Line by line: the words equal, each number within 5% (or both below 1e-4: float rounding noise)."""
    a, b = expected.strip().splitlines(), printed.strip().splitlines()
    if len(a) != len(b) or any(NUMBER.sub("#", x) != NUMBER.sub("#", y) for x, y in zip(a, b)):
        return False
    for x, y in zip(a, b):
        for u, v in zip(map(float, NUMBER.findall(x)), map(float, NUMBER.findall(y))):
            if not (abs(u) < 1e-4 and abs(v) < 1e-4) and abs(u - v) > 0.05 * max(abs(u), abs(v)):
                return False
    return True


QUOTED = re.compile(r"'[^']*'")


def close_printout(expected: str, printed: str) -> bool:
    """What a look_inside.py printed after training: line by line, the words equal and each number within 5% or
    0.02 (the third digit of a 300-step run moves with the thread count). Quoted tokens ('是') are not compared:
    a near tie between two tokens' cosines or logits may swap them."""
    a, b = (QUOTED.sub("'#'", x).strip().splitlines() for x in (expected, printed))
    if len(a) != len(b) or any(NUMBER.sub("#", x) != NUMBER.sub("#", y) for x, y in zip(a, b)):
        return False
    pairs = [(float(u), float(v)) for x, y in zip(a, b) for u, v in zip(NUMBER.findall(x), NUMBER.findall(y))]
    return all(abs(u - v) <= max(0.02, 0.05 * max(abs(u), abs(v))) for u, v in pairs)


SNIPPET_PAGES = ["docs/unified_view.md", *(f"{folder}/README.md" for folder in LESSONS.values())]


def snippet_sections() -> list:
    found = []
    for page in SNIPPET_PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        for number, section in enumerate(re.findall(r"<!-- snippet:start -->(.*?)<!-- snippet:end -->", text, re.S)):
            found.append(pytest.param(section, id=f"{page.split('/')[0]}-{number + 1}"))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("section", snippet_sections())
def test_snippet_prints_what_the_page_shows(section, tiny_model_dir, monkeypatch, capsys):
    """A marked python block, run from the repository root (tiny-bloom: the tests' tiny model), prints the
    block that follows it."""
    import sys

    code = textwrap.dedent(section.split("```python\n", 1)[1].split("```", 1)[0])
    shown = textwrap.dedent(section.split("```python\n", 1)[1].split("```", 3)[2])
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", [str(ROOT), *sys.path])
    capsys.readouterr()
    exec(compile(code.replace('"tiny-bloom"', repr(str(tiny_model_dir))), "snippet", "exec"), {"__name__": "snippet"})
    printed = capsys.readouterr().out
    assert same_printout(shown, printed), printed
