"""Bad input, interruption, untrusted files, determinism: what a real user will do to the scripts."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import FAST_VARIANTS, ROOT, TRAIN_FLAGS, VARIANTS, fails_cleanly, lesson_module, variant_params
from safetensors.torch import load_file

from common.lessons import LESSONS
from common.parameters import trainable_state


@pytest.fixture
def base_argv(tiny_model_dir, overfit_file, tmp_path):
    return ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(overfit_file),
            "--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--disable_tqdm", "true"]  # fmt: skip


def with_flag(argv, flag, value):
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


@pytest.fixture
def not_causal_lm(tiny_model_dir, tmp_path):
    """A folder with a tokenizer and a vision model's config."""
    folder = tmp_path / "vit"
    shutil.copytree(tiny_model_dir, folder)
    from transformers import ViTConfig

    (folder / "model.safetensors").unlink()
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("lesson", list(LESSONS))
@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_dataset", "dataset not found"),
        ("bad_json_line", "line 2 is not valid JSON"),
        ("all_rows_dropped", "raise --max_length"),
        ("missing_model", "model not found"),
        ("not_causal_lm", "is not a causal language model"),
        ("output_is_file", "is a file"),
        ("no_checkpoint", "no complete checkpoint"),
        ("conflicting_flags", "invalid training flags"),
    ],
)
def test_train_bad_input(lesson, case, match, base_argv, tmp_path, capsys, not_causal_lm):
    argv = base_argv
    if case == "missing_dataset":
        argv = with_flag(argv, "--dataset", str(tmp_path / "nope.json"))
    elif case == "bad_json_line":
        (tmp_path / "bad.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n', encoding="utf-8")
        argv = with_flag(argv, "--dataset", str(tmp_path / "bad.jsonl"))
    elif case == "all_rows_dropped":
        argv = argv + ["--max_length", "4"]
    elif case == "missing_model":
        argv = with_flag(argv, "--model_name_or_path", str(tmp_path / "no-model"))
    elif case == "not_causal_lm":
        argv = with_flag(argv, "--model_name_or_path", str(not_causal_lm))
    elif case == "output_is_file":
        (tmp_path / "file").write_text("x")
        argv = with_flag(argv, "--output_dir", str(tmp_path / "file"))
    elif case == "no_checkpoint":
        argv = argv + ["--resume_from_checkpoint", "true"]
    elif case == "conflicting_flags":
        argv = argv + ["--fp16", "true", "--bf16", "true"]
    fails_cleanly(capsys, lesson, "train", argv, match)
    assert not (tmp_path / "out").exists(), "a failed run must leave no output folder"


def test_target_modules_naming_no_layer_lists_real_ones(base_argv, tmp_path, capsys):
    fails_cleanly(capsys, "05", "train", base_argv + ["--target_modules", "q_proj"], "query_key_value")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_bitfit_half_precision_base_without_mixed_precision_says_which_flag(dtype, base_argv, tmp_path, capsys):
    fails_cleanly(capsys, "01", "train", base_argv + ["--dtype", dtype], "needs mixed precision for BitFit")
    assert not (tmp_path / "out").exists()


def test_ia3_without_peft_defaults_for_the_architecture_says_where_to_name_layers(base_argv, capsys, monkeypatch):
    monkeypatch.setattr(lesson_module("06", "train"), "TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING", {})
    fails_cleanly(capsys, "06", "train", base_argv, "no default IA3 layers for model type 'bloom'")


@pytest.mark.parametrize("flag", ["--activation_checkpointing", "--gradient_checkpointing"])
def test_prefix_tuning_refuses_activation_checkpointing(flag, base_argv, tmp_path, capsys):
    old_name = flag == "--gradient_checkpointing"  # transformers' deprecated alias: it says so, and it is refused too
    with pytest.warns(FutureWarning, match="gradient_checkpointing") if old_name else contextlib.nullcontext():
        fails_cleanly(capsys, "04", "train", base_argv + [flag, "true"], "cannot be combined with --activation_check")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variant", [v for lesson, v in FAST_VARIANTS.items() if lesson != "04"])
def test_activation_checkpointing_trains_the_same_weights(variant, train_once, tiny_model_dir):
    """The README's method table says every method but prefix tuning can train with activation checkpointing:
    recomputing the forward pass in backward must give the same trained values (up to float summation order)."""
    runs = [train_once(tiny_model_dir, variant, ("--max_steps", "3", "--activation_checkpointing", on))
            for on in ("false", "true")]  # fmt: skip
    assert [run.trainer.args.activation_checkpointing for run in runs] == [False, True]
    assert [run.trainer.state.global_step for run in runs] == [3, 3]
    without, with_ = (trainable_state(run.trainer.model) for run in runs)
    assert without.keys() == with_.keys() and without
    for name, value in without.items():
        torch.testing.assert_close(with_[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("lesson", list(LESSONS))
def test_infer_without_a_trained_adapter_says_how_to_make_one(lesson, tmp_path, capsys):
    """Both ways: the lesson's own command, and the tiny quick start that needs no download and no GPU."""
    argv = ["--adapter", str(tmp_path), "--prompt", "x"]
    fails_cleanly(capsys, lesson, "infer", argv, f"python {LESSONS[lesson]}/train.py (downloads")
    fails_cleanly(capsys, lesson, "infer", argv, "python -m common.tiny_model tiny-bloom && ")


def test_infer_with_another_lessons_adapter_names_that_lesson(trained, capsys):
    adapter = str(trained("lora_qkv").out_dir)
    fails_cleanly(capsys, "02", "infer", ["--adapter", adapter, "--prompt", "x"], "made by 05-chatbot_lora")
    fails_cleanly(capsys, "01", "infer", ["--adapter", str(trained("prefix").out_dir)], "made by 04-chatbot_prefix")
    fails_cleanly(capsys, "05", "infer", ["--adapter", str(trained("bitfit").out_dir)], "made by 01-chatbot_bitfit")
    fails_cleanly(capsys, "05", "infer", ["--adapter", str(trained("ia3").out_dir)], "made by 06-chatbot_ia3")


@pytest.fixture(scope="session")
def other_base(tmp_path_factory):
    from common.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("other") / "other-bloom", hidden_size=32, n_layer=2, n_head=4)


@pytest.mark.parametrize("variant", list(FAST_VARIANTS.values()))
def test_infer_with_an_adapter_for_another_base_model(variant, trained, other_base, capsys):
    t = trained(variant)
    argv = ["--adapter", str(t.out_dir), "--model_name_or_path", str(other_base), "--prompt", "x"]
    fails_cleanly(capsys, t.lesson, "infer", argv, f"it was trained on {t.argv[1]}")


@pytest.mark.slow
def test_cli_error_has_no_traceback_unless_debug(tmp_path):
    cmd = [sys.executable, str(ROOT / "05-chatbot_lora" / "train.py"), "--dataset", str(tmp_path / "missing.json")]
    plain = subprocess.run(cmd, capture_output=True, text=True)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines()[-1].startswith("error: dataset not found")
    assert "Traceback" not in plain.stderr
    debug = subprocess.run(cmd + ["--debug"], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "UserError" in debug.stderr


# ---------------------------------------------------------------- interruption


@pytest.mark.parametrize("variant", variant_params())
def test_resumed_run_equals_uninterrupted_run(variant, trained, tmp_path):
    """Resume from the mid-run checkpoint: the trained state at the end equals the uninterrupted run's.

    P-tuning and projected prefixes are the hard cases: peft's adapter file keeps only the final virtual
    tokens, so only a checkpoint holding the encoder itself can resume them faithfully.
    """
    t = trained(variant)
    checkpoint = t.out_dir / "checkpoint-100"
    assert (checkpoint / "trainer_state.json").is_file()
    argv = with_flag(t.argv, "--output_dir", str(tmp_path / "resumed")) + ["--resume_from_checkpoint", str(checkpoint)]
    resumed = lesson_module(t.lesson, "train").main(argv)
    assert resumed.state.global_step == t.trainer.state.global_step == 200
    expected, got = trainable_state(t.trainer.model), trainable_state(resumed.model)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    # and the saved artifact has the same format as an uninterrupted run's
    assert sorted(p.name for p in (tmp_path / "resumed" / "adapter").iterdir()) == sorted(
        p.name for p in t.adapter.iterdir()
    )


def wait_for(path, proc, timeout=120):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.time() - start < timeout
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["bitfit", "prompt_text", "ptuning_lstm", "prefix_proj", "lora_regex_emb", "ia3"])
def test_sigkill_mid_training_then_resume_true(variant, tiny_model_dir, overfit_file, tmp_path):
    lesson, flags = VARIANTS[variant]
    out = tmp_path / "out"
    argv = [sys.executable, str(ROOT / LESSONS[lesson] / "train.py"), "--model_name_or_path", str(tiny_model_dir),
            "--dataset", str(overfit_file), "--output_dir", str(out), *TRAIN_FLAGS, *flags]  # fmt: skip
    argv = with_flag(with_flag(argv, "--max_steps", "3000"), "--save_steps", "5")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(out / "checkpoint-10" / "trainer_state.json", proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "adapter").exists()
    # resume, and stop sooner so the test stays short
    done = subprocess.run(with_flag(argv, "--max_steps", "20") + ["--resume_from_checkpoint", "true"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 20
    model, _ = lesson_module(lesson, "infer").load_for_inference(str(out))  # the usual artifact, loadable
    assert model is not None


# ---------------------------------------------------------------- untrusted files, determinism


@pytest.mark.parametrize("variant", variant_params())
def test_artifacts_and_checkpoints_hold_no_pickled_weights(variant, trained):
    t = trained(variant)
    assert {p.suffix for p in t.adapter.iterdir()} <= {".safetensors", ".json", ".md", ".jinja"}  # text only
    for checkpoint in t.out_dir.glob("checkpoint-*"):
        # optimizer/scheduler/RNG state are torch files, which the Trainer reads with weights_only=True
        assert {p.name for p in checkpoint.iterdir() if p.suffix not in (".json", ".safetensors", ".jinja")} <= {
            "optimizer.pt", "scheduler.pt", "rng_state.pth"}  # fmt: skip
        assert set(load_file(checkpoint / "trainable_state.safetensors")) == {
            n for n, p in t.trainer.model.named_parameters() if p.requires_grad
        }


def test_trust_remote_code_is_off_unless_asked():
    for lesson in LESSONS:
        train = lesson_module(lesson, "train")
        args, _ = train.parse_train_args(train.ScriptArguments, [], train.LESSON_DIR, 1e-3)
        assert args.trust_remote_code is False


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["prompt_random", "lora_qkv"])
def test_same_seed_same_loss_curve(variant, tiny_model_dir, overfit_file, tmp_path):
    lesson, flags = VARIANTS[variant]
    train = lesson_module(lesson, "train")

    def curve(seed, name):
        argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(overfit_file), "--output_dir",
                str(tmp_path / name), *TRAIN_FLAGS, *flags, "--seed", str(seed), "--save_strategy", "no"]  # fmt: skip
        argv = with_flag(with_flag(argv, "--max_steps", "30"), "--logging_steps", "5")
        return [h["loss"] for h in train.main(argv).state.log_history if "loss" in h]

    first, second, other = curve(3, "a"), curve(3, "b"), curve(4, "c")
    assert first == second
    assert first != other  # the seed really drives the run


def test_resume_true_skips_a_checkpoint_killed_while_saving(tmp_path):
    from types import SimpleNamespace

    from common.checkpoints import TRAINABLE_STATE, resume_checkpoint

    for step, state in [(5, "{}"), (10, ""), (15, None)]:  # 10: half-written state, 15: no state yet
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / TRAINABLE_STATE).write_bytes(b"x")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    args = SimpleNamespace(resume_from_checkpoint="true", output_dir=str(tmp_path))
    assert resume_checkpoint(args) == str(tmp_path / "checkpoint-5")
