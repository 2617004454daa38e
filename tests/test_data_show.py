"""`python -m common.data --show N`: the data path a learner reads before the first lesson."""

import ast
import re

import pytest
from helpers import ROOT

from common.data import IGNORE_INDEX, main


def run_show(capsys, *argv):
    capsys.readouterr()
    main(list(argv))
    return capsys.readouterr().out


def parsed(out: str, name: str) -> list[int]:
    return ast.literal_eval(re.search(rf"^{name}:\s+(\[.*\])$", out, re.M).group(1))


def test_show_marks_the_prompt_and_pads_a_batch(tiny_model_dir, capsys):
    from transformers import AutoTokenizer

    out = run_show(capsys, "--show", "2", "--model_name_or_path", str(tiny_model_dir))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids, labels = parsed(out, "input_ids"), parsed(out, "labels")
    n_prompt = labels.count(IGNORE_INDEX)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[:n_prompt]).endswith("Assistant: ")
    assert "prompt (template applied): 'Human: 判断下面这句话的情感是积极还是消极。\\n" in out
    assert f"{n_prompt:>4} {ids[n_prompt]:>8} {labels[n_prompt]:>6}" in out  # the answer's first token is marked

    batch = out.split("collated into one batch")[1]
    rows = {name: [ast.literal_eval(line.strip()) for line in re.search(rf"{name}:\n((?:  \[.*\]\n?)+)", batch).group(1)
                   .splitlines()] for name in ("input_ids", "attention_mask", "labels")}  # fmt: skip
    width = len(rows["input_ids"][0])
    assert all(len(r) == width for rs in rows.values() for r in rs)
    short = min(range(2), key=lambda i: sum(rows["attention_mask"][i]))
    pad = width - sum(rows["attention_mask"][short])
    assert pad > 0 and "padding side: left" in batch
    assert rows["input_ids"][short][:pad] == [tokenizer.pad_token_id] * pad  # left padding
    assert rows["labels"][short][:pad] == [IGNORE_INDEX] * pad  # padding is never learned
    assert rows["input_ids"][short][pad:] == ids


def test_top_readme_shows_the_command_output(tiny_model_dir, capsys):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    pattern = r"<!-- data-show:start -->\n```\n\$ (python -m common\.data [^\n]*)\n(.*?)```\n<!-- data-show:end -->"
    block = re.search(pattern, text, re.S)
    assert block, "README.md lost its data-show block"
    argv = block.group(1).split()[3:]
    argv[argv.index("tiny-bloom")] = str(tiny_model_dir)
    out = run_show(capsys, *argv)
    assert block.group(2) == out


def test_show_refuses_a_row_out_of_range(tiny_model_dir):
    from common.errors import UserError

    with pytest.raises(UserError, match="pick a row from 0 to 212"):
        main(["--show", "213", "--model_name_or_path", str(tiny_model_dir)])
