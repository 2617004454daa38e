"""common/: the prompt format, tokenisation with label masking, data loading, collation."""

import json

import pytest
from helpers import ROOT

from common.course_template import build_prompt
from common.data import IGNORE_INDEX, load_instruction_data, make_collator, tokenize_dataset
from common.errors import UserError

ROWS = [
    {"instruction": "把句子翻译成英文。", "input": "你好", "output": "Hello"},
    {"instruction": "说出三种颜色。", "input": "", "output": "红、黄、蓝"},
]


def test_prompt_is_byte_identical_to_the_course():
    assert build_prompt("把句子翻译成英文。", "你好") == "Human: 把句子翻译成英文。\n你好\n\nAssistant: "
    assert build_prompt("说出三种颜色。", "") == "Human: 说出三种颜色。\n\nAssistant: "
    assert build_prompt("说出三种颜色。") == build_prompt("说出三种颜色。", "")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def tokenized(tokenizer, rows, max_length=256):
    import datasets

    return tokenize_dataset(datasets.Dataset.from_list(rows), tokenizer, max_length)


def test_labels_mask_exactly_the_prompt_and_keep_eos(tokenizer):
    ds = tokenized(tokenizer, ROWS)
    for row, src in zip(ds, ROWS):
        prompt = tokenizer(build_prompt(src["instruction"], src["input"]), add_special_tokens=False)["input_ids"]
        answer = tokenizer(src["output"], add_special_tokens=False)["input_ids"]
        assert row["input_ids"] == prompt + answer + [tokenizer.eos_token_id]
        assert row["labels"] == [IGNORE_INDEX] * len(prompt) + answer + [tokenizer.eos_token_id]
        assert row["attention_mask"] == [1] * len(row["input_ids"])


def test_truncation_cuts_on_the_right_and_drops_rows_with_nothing_to_learn(tokenizer, capsys):
    long_answer = {"instruction": "写一段话。", "input": "", "output": "很长的回答。" * 50}
    prompt_len = len(tokenizer(build_prompt("写一段话。"), add_special_tokens=False)["input_ids"])
    short_answer = {"instruction": "写一段话。", "input": "", "output": "好"}
    ds = tokenized(tokenizer, [long_answer, short_answer], max_length=prompt_len + 3)
    assert len(ds) == 2
    assert ds[1]["labels"][-1] == tokenizer.eos_token_id
    cut = ds[0]
    assert len(cut["input_ids"]) == prompt_len + 3
    assert cut["labels"][-1] != tokenizer.eos_token_id  # a cut answer must not teach the model to stop there
    assert sum(label != IGNORE_INDEX for label in cut["labels"]) == 3
    assert "1 of 2 rows cut" in capsys.readouterr().err
    # a max_length no longer than the prompt leaves nothing to learn: such rows are dropped, and said so
    ds = tokenized(tokenizer, [long_answer, {"instruction": "写", "input": "", "output": "好"}], max_length=prompt_len)
    assert len(ds) == 1 and "1 dropped" in capsys.readouterr().err


def test_every_row_dropped_is_an_error(tokenizer):
    with pytest.raises(UserError, match="raise --max_length"):
        tokenized(tokenizer, ROWS, max_length=4)


def test_collator_pads_left_with_pad_and_minus_100(tokenizer):
    ds = tokenized(tokenizer, ROWS)
    batch = make_collator(tokenizer)([ds[0], ds[1]])
    lengths = [len(ds[0]["input_ids"]), len(ds[1]["input_ids"])]
    short = lengths.index(min(lengths))
    pad = max(lengths) - min(lengths)
    assert pad > 0
    assert batch["input_ids"][short, :pad].tolist() == [tokenizer.pad_token_id] * pad
    assert batch["labels"][short, :pad].tolist() == [IGNORE_INDEX] * pad
    assert batch["attention_mask"][short, :pad].tolist() == [0] * pad


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def as_rows(ds):
    return [dict(r) for r in ds]


def test_loads_json_list_jsonl_json_lines_parquet_and_save_to_disk(tmp_path):
    import datasets

    expected = [dict(r) for r in ROWS]
    jsonl = "\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n"
    assert as_rows(load_instruction_data(write(tmp_path / "a.json", json.dumps(ROWS, ensure_ascii=False)))) == expected
    assert as_rows(load_instruction_data(write(tmp_path / "b.jsonl", jsonl))) == expected
    assert as_rows(load_instruction_data(write(tmp_path / "c.json", jsonl))) == expected  # JSON lines named .json
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "d.parquet"))
    assert as_rows(load_instruction_data(str(tmp_path / "d.parquet"))) == expected
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "e"))
    assert as_rows(load_instruction_data(str(tmp_path / "e"))) == expected
    datasets.DatasetDict(train=datasets.Dataset.from_list(ROWS)).save_to_disk(str(tmp_path / "f"))
    assert as_rows(load_instruction_data(str(tmp_path / "f"))) == expected


def test_missing_input_column_means_empty_input(tmp_path):
    rows = [{"instruction": r["instruction"], "output": r["output"]} for r in ROWS]
    ds = load_instruction_data(write(tmp_path / "a.json", json.dumps(rows, ensure_ascii=False)))
    assert ds["input"] == ["", ""]


def test_sample_data_is_valid_and_large_enough():
    ds = load_instruction_data(str(ROOT / "data" / "alpaca_sample_zh.json"))
    assert len(ds) >= 200
    assert sum(bool(x) for x in ds["input"]) >= 50


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.json", None, "dataset not found"),
        ("empty.json", "", "is empty"),
        ("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": \n', "line 2 is not valid JSON"),
        ("bad.json", '[{"instruction": "a",\n "output": }]', "invalid JSON at line 2"),
        ("dict.json", '{"instruction": "a", "output": "b"}', "expected a list of rows"),
        ("numbers.json", "[1, 2]", "expected a list of rows"),
        ("cols.json", '[{"question": "a", "answer": "b"}]', "missing column(s) instruction, output; columns found: "
                                                             "question, answer"),
        ("null.json", '[{"instruction": "a", "output": "b"}, {"instruction": null, "output": "c"}]',
         "row 1 has instruction = None"),
        ("number.json", '[{"instruction": "a", "output": 3}]', "row 0 has output = 3"),
        ("list.json", "[]", "holds no rows"),
        ("notes.txt", "hello", "unsupported file type"),
    ],
)  # fmt: skip
def test_bad_data_gives_one_clear_error(tmp_path, name, content, message):
    if content is not None:
        write(tmp_path / name, content)
    with pytest.raises(UserError) as info:
        load_instruction_data(str(tmp_path / name))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_undecodable_bytes(tmp_path):
    (tmp_path / "gbk.json").write_bytes('[{"instruction": "你好", "output": "好"}]'.encode("gbk"))
    with pytest.raises(UserError, match="not UTF-8 text"):
        load_instruction_data(str(tmp_path / "gbk.json"))
