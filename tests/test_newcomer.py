"""What a newcomer meets first, from a fresh clone: flags checked before anything is loaded or written, no
warnings they cannot act on, and a fast, clear failure when the hub cannot be reached."""

import os
import socket
import subprocess
import sys
import time

import pytest
from helpers import ROOT, fails_cleanly, lesson_module

from common import hub
from common.errors import UserError

NUMBERS = [
    ("--per_device_train_batch_size", "0", "--per_device_train_batch_size must be 1 or more, not 0"),
    ("--per_device_eval_batch_size", "0", "--per_device_eval_batch_size must be 1 or more"),
    ("--gradient_accumulation_steps", "0", "--gradient_accumulation_steps must be 1 or more"),
    ("--max_steps", "0", "--max_steps must be 1 or more (or -1"),
    ("--max_steps", "-3", "--max_steps must be 1 or more (or -1"),
    ("--num_train_epochs", "0", "--num_train_epochs must be more than 0"),
    ("--learning_rate", "0", "--learning_rate must be a positive number"),
    ("--learning_rate", "-1e-4", "--learning_rate must be a positive number"),
    ("--learning_rate", "nan", "--learning_rate must be a positive number"),
    ("--max_length", "1", "--max_length must be 2 or more"),
]


@pytest.mark.parametrize("flag, value, match", NUMBERS)
def test_numeric_training_flags_are_refused_before_anything_loads(flag, value, match, tmp_path, capsys, monkeypatch):
    def loaded(*args, **kwargs):
        raise AssertionError("data was loaded before the flags were checked")

    monkeypatch.setattr(lesson_module("05", "train"), "load_instruction_data", loaded)
    fails_cleanly(capsys, "05", "train", ["--output_dir", str(tmp_path / "out"), f"{flag}={value}"], match)
    assert not (tmp_path / "out").exists(), "a refused run must write nothing"


@pytest.fixture
def unreachable_hub(monkeypatch):
    """A hub endpoint where nothing listens, and no offline mode or proxy to skip the check."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in hub.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    hub._reachable.cache_clear()
    yield port
    hub._reachable.cache_clear()


def test_hub_ids_fail_at_once_without_network_and_say_how_to_work_offline(unreachable_hub, tmp_path, capsys):
    out = str(tmp_path / "out")
    started = time.monotonic()
    # the defaults: the data set is looked up first, then the model
    fails_cleanly(capsys, "05", "train", ["--output_dir", out], "dataset 'shibing624/alpaca-zh': no such local")
    local_data = ["--dataset", str(ROOT / "data" / "demo_zh.json"), "--output_dir", out]
    fails_cleanly(capsys, "05", "train", local_data, "model 'Langboat/bloom-1b4-zh': no such local folder or file")
    fails_cleanly(capsys, "05", "train", local_data, "python -m common.tiny_model tiny-bloom")
    fails_cleanly(capsys, "05", "train", local_data, "set HF_HUB_OFFLINE=1")
    assert time.monotonic() - started < 15, "each failure must come within seconds, not after retries"
    assert not (tmp_path / "out").exists()


def test_a_mistyped_local_folder_is_named_as_both_a_missing_folder_and_an_unreachable_hub_id(unreachable_hub, capsys):
    """tiny_bloom for tiny-bloom: a learner must read that no such folder exists, not only that the hub is down."""
    argv = ["--model_name_or_path", "tiny_bloom", "--dataset", str(ROOT / "data" / "demo_zh.json")]
    fails_cleanly(capsys, "05", "train", argv, "model 'tiny_bloom': no such local folder or file here")
    fails_cleanly(capsys, "05", "train", argv, "cannot be reached")


def test_offline_mode_without_the_files_says_how_to_work_offline():
    from common.models import load_tokenizer

    assert hub.offline()  # tests/conftest.py
    with pytest.raises(UserError, match="could not load a tokenizer from 'nobody/not-cached'.*tiny-bloom"):
        load_tokenizer("nobody/not-cached")


def plain_command(*args: str, cwd) -> subprocess.CompletedProcess:
    """A command as a learner types it: no warning filters, nothing but the test session's offline settings."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for stream, text in (("stderr", done.stderr), ("stdout", done.stdout)):
        noise = [line for line in text.splitlines() if "warn" in line.lower()]
        assert not noise, f"{' '.join(args[:2])} printed on {stream}: {noise}"
    return done


@pytest.mark.slow
def test_plain_commands_print_no_warnings(tmp_path):
    """The quick start, run as a learner runs it: library warnings would show here, not in pytest's summary
    (pyproject.toml filters none of them)."""
    plain_command("-m", "common.tiny_model", str(tmp_path / "tiny-bloom"), cwd=ROOT)
    train = ["05-chatbot_lora/train.py", "--model_name_or_path", str(tmp_path / "tiny-bloom"), "--dataset",
             "data/demo_zh.json", "--max_steps", "2", "--output_dir", str(tmp_path / "out")]  # fmt: skip
    lines = plain_command(*train, cwd=ROOT).stdout.splitlines()
    assert lines[0].startswith("LoRA target modules: query_key_value") and lines[1].startswith("trainable params: ")
    answer = [
        "05-chatbot_lora/infer.py",
        "--adapter",
        str(tmp_path / "out"),
        "--prompt",
        "你好",
        "--max_new_tokens",
        "2",
    ]
    assert plain_command(*answer, cwd=ROOT).stdout.strip()
    counts = plain_command("compare.py", "--model_name_or_path", str(tmp_path / "tiny-bloom"), "--variants",
                           "lora_qkv", "prompt_random", cwd=ROOT)  # fmt: skip
    assert counts.stdout.startswith("| variant |")


def test_ci_installs_what_the_readme_says_and_nothing_else():
    """.ci/run runs the install commands of the README's install blocks word for word (it extracts them), and
    installs nothing else, so a reader's venv is CI's; the README's install block gives the test tools too."""
    import re

    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    function = re.search(r"^readme_installs\(\) \{\n.*?\n\}\n", ci, re.S | re.M).group(0)
    script = function + "readme_installs install; readme_installs optional-install"
    lines = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert lines.splitlines()[:2] == [
        "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu",
        "pip install -r requirements-dev.txt",
    ]
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
    installs = re.findall(r"^\s*(?:\$SUDO )?(?:python -m )?(?:pip|apt-get) install .*$", ci, re.M)
    assert installs == ["python -m pip install -q --upgrade pip"], "CI installs something the README does not name"
    assert ci.endswith("\npython -m pytest -q -n 2\n")  # the README's full test command, as the README writes it
    assert "\npython -m pytest -q -n 2  " in (ROOT / "README.md").read_text(encoding="utf-8")
