"""Several processes on CPU (2 ranks, gloo): torchrun, accelerate launch, DeepSpeed ZeRO-2 and ZeRO-3.

Each launch pays the import of transformers and peft in both ranks, so the launches are few and shared between
the assertions (module fixtures); tests/mp_driver.py runs several lessons' `main()` in one launch.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, VARIANTS, lesson_module, probe_logits
from safetensors.torch import load_file

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed"),
]

BIN = Path(sys.executable).parent
COUNT_PREFIX = "trainable params:"
STEPS, SAVE_STEPS = 4, 2
# explicit batch layout and order, so the runs do not depend on train.py's defaults
FLAGS = [
    "--max_steps", str(STEPS), "--save_steps", str(SAVE_STEPS), "--per_device_train_batch_size", "2",
    "--gradient_accumulation_steps", "1", "--train_sampling_strategy", "random", "--max_length", "64",
    "--logging_steps", "1", "--disable_tqdm", "true", "--save_total_limit", "5",
]  # fmt: skip
NO_DROPOUT = ["--lora_dropout", "0"]  # one process draws other dropout masks than two: equal only without
# one variant per lesson for DeepSpeed: the ones with the most to gather (encoders, a trained embedding copy)
ZERO_VARIANTS = {"01": "bitfit", "02": "prompt_text", "03": "ptuning_lstm", "04": "prefix_proj", "05": "lora_regex_emb",
                 "06": "ia3"}  # fmt: skip
ARTIFACT = {"01": "bitfit_biases.safetensors"}  # the other lessons save peft's adapter_model.safetensors


def artifact_file(lesson: str, out: Path) -> Path:
    return out / "adapter" / ARTIFACT.get(lesson, "adapter_model.safetensors")


def variant_flags(variant: str) -> list[str]:
    lesson, flags = VARIANTS[variant]
    return [*flags, *(NO_DROPOUT if lesson == "05" else [])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mp_env(tmp_path_factory):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("datasets_cache"))  # the shared tokenised rows
    env.pop("PEFT_COURSE_DEBUG", None)
    return env


def launch(cmd: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:6])} ... exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


def torchrun(*args: str) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *args]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """16 short rows: 4 steps of a global batch of 4 are one epoch."""
    rows = json.loads((ROOT / "data" / "alpaca_sample_zh.json").read_text(encoding="utf-8"))
    path = tmp_path_factory.mktemp("mpdata") / "rows.json"
    path.write_text(json.dumps(sorted(rows, key=lambda r: len(json.dumps(r)))[:16], ensure_ascii=False), "utf-8")
    return path


@pytest.fixture(scope="module")
def base(tiny_model_dir, data_file):
    return ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(data_file), *FLAGS]


def driver(runs: list, folder: Path, env: dict, extra: list[str] = (), check: bool = True):
    spec = folder / "runs.json"
    spec.write_text(json.dumps(runs), encoding="utf-8")
    return launch(torchrun(*extra, "tests/mp_driver.py", str(spec)), env, check)


# ---------------------------------------------------------------- DDP: torchrun and accelerate launch
@pytest.fixture(scope="module")
def ddp_lora(tmp_path_factory, base, mp_env):
    """The README's command, without --use_cpu, on this machine without GPUs."""
    out = tmp_path_factory.mktemp("ddp_lora") / "output"
    done = launch(torchrun("05-chatbot_lora/train.py", *base, *NO_DROPOUT, "--output_dir", str(out)), mp_env)
    return out, done


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, base, mp_env):
    """DDP references for every lesson's DeepSpeed variant, then a LoRA run killed after its first checkpoint.

    Per-rank logs (torchrun --redirects) show which rank printed and tokenised what.
    """
    folder = tmp_path_factory.mktemp("ddp")
    runs = [[VARIANTS[v][0], [*base, *variant_flags(v), "--output_dir", str(folder / v)], None]
            for v in ZERO_VARIANTS.values()]  # fmt: skip
    killed = folder / "killed"
    runs.append(["05", [*base, *NO_DROPOUT, "--output_dir", str(killed)], SAVE_STEPS + 1])
    env = dict(mp_env, HF_DATASETS_CACHE=str(folder / "datasets_cache"))  # empty: someone must tokenise
    done = driver(runs, folder, env, ["--log-dir", str(folder / "logs"), "--redirects", "3"], check=False)
    assert done.returncode != 0, "the last run kills itself"
    logs = {int(p.parent.name): p for p in (folder / "logs").rglob("stdout.log")}
    return folder, {rank: (p.read_text(), (p.parent / "stderr.log").read_text()) for rank, p in logs.items()}


def test_torchrun_without_use_cpu_runs_ddp_once(ddp_lora):
    out, done = ddp_lora
    assert done.stdout.count(COUNT_PREFIX) == 1, done.stdout  # rank 0 alone prints the count line
    checkpoint = out / f"checkpoint-{STEPS}"
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert artifact_file("05", out).is_file()
    assert not list(out.glob(".adapter*")), "no second, half-written or left-over artifact"


def test_ranks_print_and_tokenise_once(ddp_runs):
    _, logs = ddp_runs
    assert sorted(logs) == [0, 1]
    (out0, err0), (out1, err1) = logs[0], logs[1]
    assert out0.count(COUNT_PREFIX) == len(ZERO_VARIANTS) + 1
    assert COUNT_PREFIX not in out1
    # rank 0 tokenised for the first run (the later ones read its cache too); rank 1 never tokenised
    assert "Tokenizing" in err0 and "Tokenizing" not in err1


def test_ddp_epochs_double_and_prompt_lesson_runs(ddp_runs, base, tmp_path):
    folder, _ = ddp_runs
    out = folder / "prompt_text"
    assert artifact_file("02", out).is_file()
    checkpoint = out / f"checkpoint-{STEPS}"
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    one = lesson_module("02", "train").main([*base, *variant_flags("prompt_text"), "--output_dir", str(tmp_path)])
    ddp_epoch = json.loads((out / "trainer_state.json").read_text())["epoch"]
    assert ddp_epoch == pytest.approx(2 * one.state.epoch)


@pytest.mark.parametrize("lesson,variant,ddp", [("05", "lora_qkv", "ddp_lora"), ("02", "prompt_text", "ddp_runs")])
def test_ddp_equals_one_process_with_the_same_global_batch(lesson, variant, ddp, request, base, tmp_path):
    fixture = request.getfixturevalue(ddp)
    out = fixture[0] if ddp == "ddp_lora" else fixture[0] / variant
    # 2 ranks x 2 rows take rows 4k..4k+3 of the same shuffled order as one process with 4 rows per step
    argv = [*base, *variant_flags(variant), "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path)]
    lesson_module(lesson, "train").main(argv)
    ddp_tensors, one_tensors = load_file(artifact_file(lesson, out)), load_file(artifact_file(lesson, tmp_path))
    assert ddp_tensors.keys() == one_tensors.keys()
    for name in one_tensors:
        torch.testing.assert_close(ddp_tensors[name], one_tensors[name], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def resumed_after_kill(ddp_runs, base, mp_env):
    killed = ddp_runs[0] / "killed"
    assert not (killed / "adapter").exists() and (killed / f"checkpoint-{SAVE_STEPS}").is_dir()
    argv = [*base, *NO_DROPOUT, "--output_dir", str(killed), "--resume_from_checkpoint", "true"]
    done = launch(torchrun("05-chatbot_lora/train.py", *argv), mp_env)
    return killed, done


def test_ddp_resume_after_kill_equals_uninterrupted(resumed_after_kill, ddp_lora):
    folder, done = resumed_after_kill
    assert done.stdout.count("'loss'") == STEPS - SAVE_STEPS, "only the steps after the checkpoint ran"
    resumed = load_file(artifact_file("05", folder))
    uninterrupted = load_file(artifact_file("05", ddp_lora[0]))
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], uninterrupted[name], atol=0, rtol=0)


def test_accelerate_launch_readme_command_starts_two_processes(tmp_path, base, mp_env):
    out = tmp_path / "output"
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", str(free_port()), "05-chatbot_lora/train.py", *base, "--output_dir", str(out),
           "--max_steps", "1", "--save_steps", "1"]  # fmt: skip
    done = launch(cmd, mp_env)
    assert done.stdout.count(COUNT_PREFIX) == 1
    assert (out / "checkpoint-1" / "rng_state_1.pth").is_file()  # written by the second process
    assert json.loads((out / "trainer_state.json").read_text())["epoch"] == pytest.approx(4 / 16)


def test_several_processes_without_gpu_refuse_use_cpu_false(monkeypatch):
    from common.distributed import setup_processes
    from common.errors import UserError
    from common.train_args import parse_train_args

    train = lesson_module("05", "train")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr("common.distributed.has_accelerator", lambda: False)
    _, training_args = parse_train_args(train.ScriptArguments, ["--use_cpu", "false"], train.LESSON_DIR, 1e-3)
    with pytest.raises(UserError, match="--use_cpu false"):
        setup_processes(training_args)


def test_ddp_defaults_leave_user_choice(tmp_path):
    from common.train_args import parse_train_args

    train = lesson_module("05", "train")
    args = ["--output_dir", str(tmp_path)]
    _, default = parse_train_args(train.ScriptArguments, args, train.LESSON_DIR, 1e-3)
    assert default.ddp_find_unused_parameters is False
    _, chosen = parse_train_args(
        train.ScriptArguments, [*args, "--ddp_find_unused_parameters", "true"], train.LESSON_DIR, 1e-3
    )
    assert chosen.ddp_find_unused_parameters is True


# ---------------------------------------------------------------- DeepSpeed ZeRO-2 / ZeRO-3
def ds_config(stage: int, folder: Path) -> Path:
    config = json.loads((ROOT / "ds_config" / f"zero{stage}.json").read_text())
    if stage == 3:  # the tiny model's tensors are all below the default threshold: partition every one
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = folder / f"zero{stage}.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def zero(tmp_path_factory, base, mp_env):
    """stage -> (folder, launch): every lesson under that ZeRO stage in one launch; under ZeRO-3 each lesson is
    then resumed from its first checkpoint into a second folder."""
    pytest.importorskip("deepspeed")
    done = {}

    def run(stage: int):
        if stage not in done:
            folder = tmp_path_factory.mktemp(f"zero{stage}")
            flags = ["--deepspeed", str(ds_config(stage, folder))]
            runs = [[VARIANTS[v][0], [*base, *variant_flags(v), *flags, "--output_dir", str(folder / v)], None]
                    for v in ZERO_VARIANTS.values()]  # fmt: skip
            if stage == 3:
                checkpoint = f"checkpoint-{SAVE_STEPS}"
                runs += [[VARIANTS[v][0], [*base, *variant_flags(v), *flags, "--output_dir",
                                           str(folder / f"{v}-resumed"), "--resume_from_checkpoint",
                                           str(folder / v / checkpoint)], None]
                         for v in ZERO_VARIANTS.values()]  # fmt: skip
            done[stage] = folder, driver(runs, folder, mp_env)
        return done[stage]

    return run


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_counts_equal_ddp(stage, zero, ddp_runs):
    """Under ZeRO-3 the base model is loaded partitioned; the count line must still be the real count."""
    _, done = zero(stage)
    counts = [line for line in done.stdout.splitlines() if line.startswith(COUNT_PREFIX)]
    ddp_counts = [line for line in ddp_runs[1][0][0].splitlines() if line.startswith(COUNT_PREFIX)]
    assert counts[: len(ZERO_VARIANTS)] == ddp_counts[: len(ZERO_VARIANTS)]


@pytest.mark.parametrize("lesson", sorted(ZERO_VARIANTS))
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_artifact_reloads_with_ddp_logits(stage, lesson, zero, ddp_runs):
    folder, _ = zero(stage)
    variant = ZERO_VARIANTS[lesson]
    out, ddp_out = folder / variant, ddp_runs[0] / variant
    saved, ddp_saved = load_file(artifact_file(lesson, out)), load_file(artifact_file(lesson, ddp_out))
    state, ddp_state = (load_file(o / f"checkpoint-{STEPS}" / "trainable_state.safetensors") for o in (out, ddp_out))
    for mine, reference in ((saved, ddp_saved), (state, ddp_state)):
        assert mine.keys() == reference.keys()
        for name, tensor in mine.items():
            assert tensor.numel() > 0 and tensor.shape == reference[name].shape, name
    assert not list(out.glob(".adapter*")), "no scratch or half-written artifact left"
    earlier = load_file(out / f"checkpoint-{SAVE_STEPS}" / "trainable_state.safetensors")
    assert any(not torch.equal(earlier[name], state[name]) for name in state), "training moved the tensors"
    infer = lesson_module(lesson, "infer")
    logits = [probe_logits(*infer.load_for_inference(str(o / "adapter"))) for o in (out, ddp_out)]
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("lesson", sorted(ZERO_VARIANTS))
def test_zero3_resume_equals_uninterrupted(lesson, zero):
    folder, _ = zero(3)
    variant = ZERO_VARIANTS[lesson]
    resumed_folder = folder / f"{variant}-resumed"
    # a run that ignored the checkpoint would train from step 0 and save its own first checkpoint
    assert not (resumed_folder / f"checkpoint-{SAVE_STEPS}").exists()
    assert (resumed_folder / f"checkpoint-{STEPS}").is_dir()
    resumed = load_file(artifact_file(lesson, resumed_folder))
    uninterrupted = load_file(artifact_file(lesson, folder / variant))
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], uninterrupted[name], atol=1e-6, rtol=0)
