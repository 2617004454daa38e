"""The chat page in a real browser, conversation history, the chat template saved with every artifact, and the
merged folder used the standard way (`pipeline(...)` with chat messages)."""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from helpers import ROOT, fails_cleanly, greedy_reference_for_prompt, lesson_module

from common.course_template import build_chat_prompt, build_prompt, user_message
from common.lessons import LESSONS

MAX_NEW = 12
QUESTIONS = ["地球为什么有四季？", "用一句话解释什么是光合作用。"]
GREEDY = ["--do_sample", "false", "--max_new_tokens", str(MAX_NEW)]
# where the browser test also saves its screenshot (the README's picture: docs/web_chat.png)
SCREENSHOT_ENV = "WEB_SCREENSHOT"
# set by .ci/run: there the browser test must run, never skip
REQUIRE_ENV = "REQUIRE_BROWSER_TEST"


def run_infer(lesson, capsys, *argv):
    capsys.readouterr()
    lesson_module(lesson, "infer").main(list(argv))
    return capsys.readouterr().out


def chat_in_terminal(lesson, capsys, monkeypatch, lines, *argv):
    """The terminal chat fed `lines`, as a user types them; returns stdout."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines) + "\n"))
    return run_infer(lesson, capsys, *argv)


def chat_answers(out):
    """The answers in a terminal chat's stdout: `Human: Assistant: <answer>` per turn, then the last `Human: `."""
    return [answer.strip() for answer in out.removesuffix("Human: ").split("Human: Assistant: ")[1:]]


def history_messages(turns, message):
    return [m for q, a in turns for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})] + [
        {"role": "user", "content": message}
    ]


@pytest.fixture(scope="module")
def lora(trained):
    return trained("lora_qkv")


def expected_answers(out_dir):
    """Greedy answers: the first question alone, then the second with the first turn as history."""
    model, tokenizer = lesson_module("05", "infer").load_for_inference(str(out_dir))
    first = greedy_reference_for_prompt(model, tokenizer, build_prompt(QUESTIONS[0]), MAX_NEW)
    with_history = build_chat_prompt([(QUESTIONS[0], first)], QUESTIONS[1], tokenizer.eos_token)
    second = greedy_reference_for_prompt(model, tokenizer, with_history, MAX_NEW)
    alone = greedy_reference_for_prompt(model, tokenizer, build_prompt(QUESTIONS[1]), MAX_NEW)
    assert second != alone, "the history must change the answer, or these tests could not tell"
    return {"first": first, "second": second, "second_alone": alone}


@pytest.fixture(scope="module")
def expected(lora):
    return expected_answers(lora.out_dir)


@pytest.fixture(scope="module")
def qwen_lora(trained_other):
    """LoRA on a tiny Qwen3 (grouped-query attention, RoPE): the page on one architecture besides BLOOM. The
    same run as test_other_models' qwen3 case, shared within a session."""
    return trained_other("qwen3", "lora_qkv")


@pytest.fixture(scope="module")
def qwen_expected(qwen_lora):
    return expected_answers(qwen_lora.out_dir)


@pytest.fixture(scope="module")
def merged(trained, tmp_path_factory):
    """variant -> folder written by infer.py --merge_to with greedy settings."""
    out = {}
    for variant, lesson in (("bitfit", "01"), ("lora_qkv", "05")):
        folder = tmp_path_factory.mktemp("merged") / variant
        lesson_module(lesson, "infer").main(["--adapter", str(trained(variant).out_dir), "--merge_to", str(folder),
                                             *GREEDY])  # fmt: skip
        out[variant] = folder
    return out


# ---------------------------------------------------------------- history


def test_terminal_chat_keeps_history(lora, expected, capsys, monkeypatch):
    adapter = ["--adapter", str(lora.out_dir), *GREEDY]
    assert run_infer("05", capsys, *adapter, "--prompt", QUESTIONS[0]).strip() == expected["first"]
    assert chat_answers(chat_in_terminal("05", capsys, monkeypatch, QUESTIONS, *adapter)) == [
        expected["first"], expected["second"]]  # fmt: skip
    single = chat_in_terminal("05", capsys, monkeypatch, QUESTIONS, *adapter, "--history_turns", "0")
    assert chat_answers(single) == [expected["first"], expected["second_alone"]]


def test_oldest_turns_are_dropped_first_when_the_prompt_is_too_long(lora):
    from common.generation import conversation_prompt, prompt_budget

    model, tokenizer = lesson_module("05", "infer").load_for_inference(str(lora.out_dir))
    history = [("第一个问题", "第一个回答"), ("第二个问题", "第二个回答"), ("第三个问题", "第三个回答")]
    eos = tokenizer.eos_token

    def length(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    assert conversation_prompt(tokenizer, history, "新问题", 3, 10**6) == (build_chat_prompt(history, "新问题", eos), 3)
    assert conversation_prompt(tokenizer, history, "新问题", 2, 10**6) == (
        build_chat_prompt(history[1:], "新问题", eos), 2)  # fmt: skip
    assert conversation_prompt(tokenizer, history, "新问题", 0, 10**6) == (build_prompt("新问题"), 0)
    fits_two = length(build_chat_prompt(history[1:], "新问题", eos))
    assert conversation_prompt(tokenizer, history, "新问题", 3, fits_two) == (
        build_chat_prompt(history[1:], "新问题", eos), 2)  # fmt: skip
    assert conversation_prompt(tokenizer, history, "新问题", 3, fits_two - 1)[1] == 1
    # not even the question fits: it is still asked, alone
    assert conversation_prompt(tokenizer, history, "新问题", 3, 1) == (build_prompt("新问题"), 0)
    # BLOOM records no context length: 2048 (its pretraining length), less the answer
    assert prompt_budget(model, tokenizer, MAX_NEW) == 2048 - MAX_NEW


def test_streamed_turn_grows_and_ends_with_the_cli_answer(lora, expected):
    from common.generation import generation_kwargs
    from common.infer_args import parse_infer_args
    from common.web import stream_turn

    model, tokenizer = lesson_module("05", "infer").load_for_inference(str(lora.out_dir))
    gen_kwargs = generation_kwargs(parse_infer_args(GREEDY, ""), tokenizer)
    shown = list(stream_turn(model, tokenizer, [(QUESTIONS[0], expected["first"])], QUESTIONS[1], gen_kwargs, 3))
    assert len(shown) >= 3, shown  # token by token, not all at once
    assert all(b.startswith(a) for a, b in zip(shown[:-2], shown[1:-1])), shown
    assert shown[-1] == expected["second"]


def test_web_turn_and_terminal_chat_on_qwen3(qwen_lora, qwen_expected, capsys, monkeypatch):
    from common.generation import generation_kwargs, prompt_budget
    from common.infer_args import parse_infer_args
    from common.web import stream_turn

    model, tokenizer = lesson_module("05", "infer").load_for_inference(str(qwen_lora.out_dir))
    gen_kwargs = generation_kwargs(parse_infer_args(GREEDY, ""), tokenizer)
    shown = list(stream_turn(model, tokenizer, [(QUESTIONS[0], qwen_expected["first"])], QUESTIONS[1], gen_kwargs, 3))
    assert len(shown) >= 3 and all(b.startswith(a) for a, b in zip(shown[:-2], shown[1:-1])), shown
    assert shown[-1] == qwen_expected["second"]
    adapter = ["--adapter", str(qwen_lora.out_dir), *GREEDY]
    out = chat_in_terminal("05", capsys, monkeypatch, QUESTIONS, *adapter)
    assert chat_answers(out) == [qwen_expected["first"], qwen_expected["second"]]
    # Qwen records its context length, unlike BLOOM
    assert prompt_budget(model, tokenizer, MAX_NEW) == model.config.max_position_embeddings - MAX_NEW


# ---------------------------------------------------------------- chat template and merged folders


def template_cases(eos):
    rows = json.loads((ROOT / "data" / "alpaca_sample_zh.json").read_text(encoding="utf-8"))
    picked = [r for r in rows if r["input"]][:3] + [r for r in rows if not r["input"]][:2]
    # what build_prompt's strip() is there for: whitespace at the end of a field
    picked += [{"instruction": "翻译成英文。", "input": "早上好\n"}, {"instruction": "写一首诗 ", "input": "  "}]
    cases = [([{"role": "user", "content": user_message(r["instruction"], r["input"])}],
              build_prompt(r["instruction"], r["input"])) for r in picked]  # fmt: skip
    turns = [(r["instruction"], r["output"]) for r in picked[:3]]
    cases.append((history_messages(turns, "再说一遍"), build_chat_prompt(turns, "再说一遍", eos)))
    return cases


@pytest.mark.parametrize("folder", ["adapter", "merged_lora", "merged_bitfit"])
def test_saved_chat_template_renders_the_training_prompt(folder, lora, merged):
    from transformers import AutoTokenizer

    path = {"adapter": lora.adapter, "merged_lora": merged["lora_qkv"], "merged_bitfit": merged["bitfit"]}[folder]
    tokenizer = AutoTokenizer.from_pretrained(path)
    for messages, prompt in template_cases(tokenizer.eos_token):
        assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == prompt
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with pytest.raises(Exception, match="user/assistant turns only"):
        tokenizer.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)


@pytest.mark.parametrize("variant, lesson", [("bitfit", "01"), ("lora_qkv", "05")])
def test_merged_folder_through_pipeline_answers_like_infer(variant, lesson, trained, merged, capsys, monkeypatch):
    from transformers import pipeline

    adapter = ["--adapter", str(trained(variant).out_dir), *GREEDY]
    first = run_infer(lesson, capsys, *adapter, "--prompt", QUESTIONS[0]).strip()
    second = chat_answers(chat_in_terminal(lesson, capsys, monkeypatch, QUESTIONS, *adapter))[1]
    config = json.loads((merged[variant] / "generation_config.json").read_text(encoding="utf-8"))
    tokenizer_eos = json.loads((trained(variant).adapter / "tokenizer_config.json").read_text())["eos_token"]
    assert tokenizer_eos == "</s>" and config["eos_token_id"] == 2 and config["pad_token_id"] == 3
    assert config["do_sample"] is False and config["max_new_tokens"] == MAX_NEW
    pipe = pipeline("text-generation", model=str(merged[variant]), device="cpu")
    # no generation arguments: the merged folder's generation_config.json carries infer.py's settings
    reply = pipe([{"role": "user", "content": QUESTIONS[0]}])[0]["generated_text"][-1]
    assert reply["role"] == "assistant" and reply["content"].strip() == first
    reply = pipe(history_messages([(QUESTIONS[0], first)], QUESTIONS[1]))[0]["generated_text"][-1]
    assert reply["content"].strip() == second


# ---------------------------------------------------------------- one-line errors


@pytest.mark.parametrize("lesson", list(LESSONS))
def test_unknown_flag_is_one_error_line(lesson, capsys):
    argv = ["--output_dir", "x", "--prompt", "hi"]  # a train.py flag
    fails_cleanly(capsys, lesson, "infer", argv, "unrecognized arguments: --output_dir")


def test_web_port_in_use_is_one_error_line_before_anything_loads(tmp_path, capsys, monkeypatch):
    """No adapter there and no gradio: the port is what is reported, so it is checked first."""
    monkeypatch.setitem(sys.modules, "gradio", None)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        fails_cleanly(capsys, "05", "infer", ["--adapter", str(tmp_path / "none"), "--web", "--port", port],
                      f"--web cannot listen on 127.0.0.1:{port}")  # fmt: skip


def test_web_without_gradio_is_one_error_line(lora, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # what `import gradio` meets when it is not installed
    fails_cleanly(capsys, "05", "infer", ["--adapter", str(lora.out_dir), "--web"], "--web needs gradio")


@pytest.mark.parametrize("lesson, variant", [("02", "prompt_random"), ("04", "prefix")])
def test_unmergeable_adapter_is_refused_before_loading_the_base(lesson, variant, trained, capsys, tmp_path):
    # a base model that does not exist: loading it first would report that instead
    argv = ["--adapter", str(trained(variant).out_dir), "--model_name_or_path", str(tmp_path / "no-such-model"),
            "--merge_to", str(tmp_path / "merged")]  # fmt: skip
    fails_cleanly(capsys, lesson, "infer", argv, "cannot be merged")
    assert not (tmp_path / "merged").exists()


# ---------------------------------------------------------------- the page in a real browser


def browser_or_skip():
    """playwright and Debian's chromium; their absence skips the test, except where .ci/run requires it."""
    missing = [name for name, ok in (("chromium", shutil.which("chromium")), ("playwright", _has("playwright")),
                                     ("gradio", _has("gradio"))) if not ok]  # fmt: skip
    if missing:
        message = f"browser test needs {', '.join(missing)}: apt-get install chromium fonts-wqy-microhei; " \
                  "pip install -r requirements-web.txt"  # fmt: skip
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return shutil.which("chromium")


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_page(proc, log, port, timeout=120):
    """Until the page answers; fail with the server's output if it dies first."""
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"infer.py --web exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail("infer.py --web did not serve its page in time")


@pytest.mark.browser
@pytest.mark.parametrize("arch", ["bloom", "qwen3"])
def test_web_page_in_a_browser_answers_like_the_cli(arch, request, tmp_path, capsys):
    chromium = browser_or_skip()
    from playwright.sync_api import sync_playwright

    lora = request.getfixturevalue("lora" if arch == "bloom" else "qwen_lora")
    expected = request.getfixturevalue("expected" if arch == "bloom" else "qwen_expected")

    port = free_port()
    cmd = [sys.executable, str(ROOT / LESSONS["05"] / "infer.py"), "--adapter", str(lora.out_dir), "--web",
           "--port", str(port), *GREEDY]  # fmt: skip
    # infer.py must turn gradio's analytics off itself
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    log = tmp_path / "server.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, text=True, env=env)
    try:
        cli_answer = run_infer("05", capsys, "--adapter", str(lora.out_dir), *GREEDY, "--prompt", QUESTIONS[0])
        wait_for_page(proc, log, port)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                         "--disable-dev-shm-usage"])  # fmt: skip
            page = browser.new_page(viewport={"width": 1100, "height": 860}, locale="zh-CN")
            requests = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(f"http://127.0.0.1:{port}/")
            header = page.locator("text=05-chatbot_lora").first
            header.wait_for(timeout=30_000)
            assert "LORA" in page.content() and str(lora.adapter) in page.content()
            box = page.locator("#message textarea")
            answers = []
            for turn, question in enumerate(QUESTIONS):
                box.fill(question)
                box.press("Enter")
                # finished: this turn's answer is on the page and gradio's progress tracker is hidden again
                page.wait_for_function(
                    """n => document.querySelectorAll('#chat [data-testid="bot"]').length === n &&
                           document.querySelector('#chat [data-testid="status-tracker"]').classList.contains('hide')""",
                    arg=turn + 1, timeout=60_000)  # fmt: skip
                bot = page.locator('#chat [data-testid="bot"] .message-content').nth(turn)
                answers.append(bot.text_content().strip())
            page.screenshot(path=str(tmp_path / "web_chat.png"))
            browser.close()
        assert answers == [cli_answer.strip(), expected["second"]]
        assert answers[0] == expected["first"]
        hosts = {url.split("/")[2] for url in requests if url.startswith(("http:", "https:", "ws:", "wss:"))}
        assert hosts == {f"127.0.0.1:{port}"}, "the page must work offline: no CDN, no analytics"
        if os.environ.get(SCREENSHOT_ENV) and arch == "bloom":  # the README shows the course model
            shutil.copyfile(tmp_path / "web_chat.png", os.environ[SCREENSHOT_ENV])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
