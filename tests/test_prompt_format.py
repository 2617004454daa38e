"""`--prompt_format model`: training rows rendered and masked in the tokenizer's own chat template, the template
saved with the adapter, and every infer.py mode answering in it without being told.

The expected ChatML texts are written out here by hand, not produced by the code under test."""

import io
import json
import sys

import pytest
from helpers import (
    PROBE,
    TRAIN_FLAGS,
    fails_cleanly,
    greedy_reference_for_prompt,
    greedy_token_ids,
    lesson_module,
)

from common.course_template import build_prompt, chat_template

MAX_NEW = 12
GREEDY = ["--do_sample", "false", "--max_new_tokens", str(MAX_NEW)]
MODEL_FORMAT = ["--prompt_format", "model"]


def chatml_user(text):
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def chatml_conversation(turns, message):
    return "".join(chatml_user(q) + a + "<|im_end|>\n" for q, a in turns) + chatml_user(message)


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory):
    """A tiny random Qwen2 whose tokenizer has a ChatML template with <|im_start|>/<|im_end|> special tokens."""
    from common.tiny_model import build_tiny_other_model

    return build_tiny_other_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen2-chat", "qwen2", chatml=True)


@pytest.fixture(scope="module")
def chat_lora(chat_model_dir, overfit_file, tmp_path_factory):
    """Lesson 05 trained in the model's format, once for this module; returns its output folder."""
    out_dir = tmp_path_factory.mktemp("chat-lora") / "output"
    argv = ["--model_name_or_path", str(chat_model_dir), "--dataset", str(overfit_file), "--output_dir", str(out_dir),
            *TRAIN_FLAGS, "--learning_rate", "1e-2", *MODEL_FORMAT]  # fmt: skip
    lesson_module("05", "train").main(argv)
    return out_dir


@pytest.fixture(scope="module")
def loaded(chat_lora):
    """(model, tokenizer, stop ids) as infer.py loads them; the stop ids named here, not taken from the code."""
    model, tokenizer = lesson_module("05", "infer").load_for_inference(str(chat_lora))
    stop = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
    return model, tokenizer, stop


def run_infer(capsys, *argv):
    capsys.readouterr()
    lesson_module("05", "infer").main(list(argv))
    return capsys.readouterr().out


# ---------------------------------------------------------------- rendering and masking


@pytest.mark.parametrize(
    "row, max_length",
    [
        ({"instruction": "今天是星期二，17天后是星期几？", "input": "", "output": "星期五。"}, 256),
        ({"instruction": "把句子翻译成英文。", "input": "你好", "output": "Hello."}, 256),
        ({"instruction": "写一首诗", "input": None, "output": "春眠不觉晓，处处闻啼鸟。" * 4}, 30),
    ],
    ids=["no-input", "input", "cut"],
)
def test_model_format_row_is_masked_exactly_on_the_prompt(row, max_length, chat_model_dir):
    import datasets

    from common.course_template import user_message
    from common.data import IGNORE_INDEX, tokenize_dataset
    from common.models import load_tokenizer

    tokenizer = load_tokenizer(str(chat_model_dir), prompt_format="model")
    example = tokenize_dataset(datasets.Dataset.from_list([row]), tokenizer, max_length)[0]
    prompt = chatml_user(user_message(row["instruction"], row["input"] or ""))
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(row["output"], add_special_tokens=False)["input_ids"]
    full = (prompt_ids + answer_ids + [tokenizer.convert_tokens_to_ids("<|im_end|>")])[:max_length]
    assert example["input_ids"] == full
    assert example["labels"] == [IGNORE_INDEX] * len(prompt_ids) + full[len(prompt_ids) :]
    if max_length == 256:  # whole rows end with the end-of-turn token, and it is learned
        assert example["labels"][-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_a_template_whose_prompt_is_no_prefix_of_the_row_is_refused(chat_model_dir):
    import datasets

    from common.data import tokenize_dataset
    from common.errors import UserError
    from common.models import load_tokenizer

    tokenizer = load_tokenizer(str(chat_model_dir), prompt_format="model")
    # the generation prompt opens the assistant turn differently from how a finished turn is written
    tokenizer.chat_template = tokenizer.chat_template.replace("'<|im_start|>assistant\n'", "'<|im_start|>bot\n'")
    rows = datasets.Dataset.from_list([{"instruction": "你好", "input": "", "output": "你好！"}])
    with pytest.raises(UserError, match="-100 label mask cannot be placed"):
        tokenize_dataset(rows, tokenizer, 256)


def test_model_format_is_refused_for_a_tokenizer_without_a_chat_template(
    tiny_model_dir, overfit_file, tmp_path, capsys
):
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(overfit_file), "--output_dir",
            str(tmp_path / "out"), "--max_steps", "1", *MODEL_FORMAT]  # fmt: skip
    fails_cleanly(capsys, "05", "train", argv, "has no chat template")
    assert not (tmp_path / "out" / "adapter").exists()


# ---------------------------------------------------------------- the saved adapter and infer.py


def test_saved_tokenizer_carries_the_base_template_and_the_format(chat_lora, chat_model_dir):
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(chat_model_dir).chat_template
    assert base and base != chat_template()
    checkpoints = sorted(chat_lora.glob("checkpoint-*"))
    assert checkpoints
    for folder in [chat_lora / "adapter", *checkpoints]:
        assert AutoTokenizer.from_pretrained(folder).chat_template == base, folder
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        assert config["prompt_format"] == "model", folder


def test_prompt_and_input_file_answer_in_the_model_format(chat_lora, loaded, capsys, tmp_path):
    model, tokenizer, stop = loaded
    expected = [greedy_reference_for_prompt(model, tokenizer, chatml_user(p), MAX_NEW, stop) for p in PROBE]
    # the format matters: the course's prompt gives another answer, so the test can tell which one was used
    course = [greedy_reference_for_prompt(model, tokenizer, build_prompt(p), MAX_NEW, stop) for p in PROBE]
    assert expected != course
    # a trained row with a short answer ends in <|im_end|> within MAX_NEW tokens: generation must stop there
    ids = greedy_token_ids(model, tokenizer, chatml_user(PROBE[1]), MAX_NEW, stop)
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.decode(ids)
    adapter = ["--adapter", str(chat_lora), *GREEDY]
    assert run_infer(capsys, *adapter, "--prompt", PROBE[1]).strip() == expected[1]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(p.replace("\n", " ") for p in PROBE) + "\n", encoding="utf-8")
    rows = [json.loads(line) for line in run_infer(capsys, *adapter, "--input_file", str(prompts)).splitlines()]
    flat = [greedy_reference_for_prompt(model, tokenizer, chatml_user(p.replace("\n", " ")), MAX_NEW, stop)
            for p in PROBE]  # fmt: skip
    assert [r["response"] for r in rows] == flat


def test_terminal_chat_and_web_turn_render_the_whole_history_in_the_template(chat_lora, loaded, capsys, monkeypatch):
    from common.generation import generation_kwargs
    from common.infer_args import parse_infer_args
    from common.web import stream_turn

    model, tokenizer, stop = loaded
    first = greedy_reference_for_prompt(model, tokenizer, chatml_user(PROBE[0]), MAX_NEW, stop)
    second = greedy_reference_for_prompt(model, tokenizer, chatml_conversation([(PROBE[0], first)], "你好"), MAX_NEW,
                                         stop)  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{PROBE[0]}\n你好\n\n"))
    out = run_infer(capsys, "--adapter", str(chat_lora), *GREEDY)
    answers = [a.strip() for a in out.removesuffix("Human: ").split("Human: Assistant: ")[1:]]
    assert answers == [first, second]
    gen_kwargs = generation_kwargs(parse_infer_args(GREEDY, ""), tokenizer)
    assert list(stream_turn(model, tokenizer, [(PROBE[0], first)], "你好", gen_kwargs, 3))[-1] == second


def test_merged_folder_answers_chat_messages_in_the_model_format(chat_lora, loaded, capsys, tmp_path):
    from transformers import pipeline

    model, tokenizer, stop = loaded
    expected = greedy_reference_for_prompt(model, tokenizer, chatml_user(PROBE[1]), MAX_NEW, stop)
    run_infer(capsys, "--adapter", str(chat_lora), "--merge_to", str(tmp_path / "merged"), *GREEDY)
    pipe = pipeline("text-generation", model=str(tmp_path / "merged"), device="cpu")
    # no generation arguments: the merged folder's template and generation_config.json do it (stop included)
    reply = pipe([{"role": "user", "content": PROBE[1]}])[0]["generated_text"][-1]
    assert reply["role"] == "assistant" and reply["content"].strip() == expected
