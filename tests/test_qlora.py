"""Lesson 08 (QLoRA): the quantised base on a CPU, on the tiny and the mini model; NF4 by hand against
bitsandbytes; the device defaults; the memory mode's code path; the bad inputs. The checks every lesson shares
(loss falls, only LoRA moves, reload, generate) run for its variants in test_lessons.py."""

import json
import sys

import pytest
import torch
from helpers import (
    PROBE,
    ROOT,
    fails_cleanly,
    greedy_reference,
    initial_model,
    lesson_module,
    probe_logits,
)
from safetensors.torch import load_file

MINI = ROOT / "models" / "mini-bloom-zh"
QUANTIZATIONS = {"qlora_nf4": "nf4", "lora_int8": "int8"}


def scratch():
    return lesson_module("08", "from_scratch")


def mini_weights() -> dict[str, torch.Tensor]:
    """The mini model's matrices bitsandbytes quantises (every Linear; the tied embedding is not one)."""
    return {k: w for k, w in load_file(MINI / "model.safetensors").items() if w.dim() == 2 and "word_emb" not in k}


# ---------------------------------------------------------------- NF4 by hand == bitsandbytes
def test_nf4_levels_are_derived_and_equal_bitsandbytes_table():
    from bitsandbytes.functional import get_4bit_type

    levels = scratch().nf4_levels()
    assert torch.equal(levels, get_4bit_type("nf4", device="cpu"))
    assert levels[7] == 0 and levels[0] == -1 and levels[-1] == 1  # an exact zero, both ends
    assert (levels[:7] < 0).all() and (levels[8:] > 0).all()  # 7 negative, 8 positive


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [True, False])
def test_4bit_by_hand_equals_bitsandbytes_bit_for_bit(quant_type, double_quant):
    """Packed codes, scales (and their 8-bit codes) and the dequantised weights, every matrix of the mini model."""
    import bitsandbytes.functional as bnbf

    for name, w in mini_weights().items():
        packed, state = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=double_quant, quant_type=quant_type)
        hand = scratch().quantize_4bit(w, quant_type, 64, double_quant)
        assert torch.equal(hand["packed"], packed), name
        if double_quant:
            assert torch.equal(hand["absmax_codes"], state.absmax), name
            assert torch.equal(hand["absmax2"], state.state2.absmax) and torch.equal(hand["offset"], state.offset)
        else:
            assert torch.equal(hand["absmax"], state.absmax), name
        assert torch.equal(scratch().dequantize_4bit(hand, quant_type, 64), bnbf.dequantize_4bit(packed, state)), name


def test_exact_nearest_scale_codes_differ_from_bitsandbytes_lookup_by_at_most_one_level():
    """Without bitsandbytes' 65,536-point lookup grid the double-quantised scales take the truly nearest 8-bit
    level: a few differ, each by one level (the tolerance the README states for that variant of the algorithm)."""
    import bitsandbytes.functional as bnbf

    differ = total = 0
    for w in mini_weights().values():
        _, state = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
        exact = scratch().quantize_4bit(w, "nf4", 64, True, grid=0)["absmax_codes"]
        steps = (exact.int() - state.absmax.int()).abs()
        assert steps.max() <= 1
        differ, total = differ + int((steps > 0).sum()), total + steps.numel()
    assert 0 < differ < total / 100


def test_int8_rows_by_hand_equal_bitsandbytes():
    import bitsandbytes.functional as bnbf

    for name, w in mini_weights().items():
        codes, absmax, _ = bnbf.int8_vectorwise_quant(w.to(torch.float16))
        hand_codes, hand_absmax = scratch().quantize_int8_rows(w)
        assert torch.equal(hand_codes, codes) and torch.equal(hand_absmax, absmax), name


def test_block_sizes_bitsandbytes_does_not_take_are_refused():
    from common.errors import UserError

    with pytest.raises(UserError, match="block size 48"):
        scratch().quantize_4bit(torch.randn(8, 8), "nf4", 48)
    short = torch.randn(5, 7)  # 35 values: one short block, as bitsandbytes pads it
    assert scratch().dequantize_4bit(scratch().quantize_4bit(short, "nf4", 64, False), "nf4", 64).shape == (5, 7)


@pytest.mark.parametrize("quantization", ["nf4", "fp4", "int8"])
def test_from_scratch_on_the_mini_model_matches_bitsandbytes_and_peft(quantization, capsys):
    code = scratch().main(["--model_name_or_path", str(MINI), "--quantization", quantization])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "stored codes and scales bit for bit bitsandbytes': 16 of 16" in out
    assert out.strip().splitlines()[-1] == "max |logit difference| vs peft: 0"


# ---------------------------------------------------------------- training on the mini model, reload, generate
@pytest.fixture(scope="module")
def mini_trained(train_once):
    return lambda variant: train_once(MINI, variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(QUANTIZATIONS))
def test_mini_model_trains_with_lesson_05_count_and_reloads_and_generates_exactly(variant, mini_trained, capsys):
    from common.generation import generate_answers
    from common.parameters import count_parameters

    t = mini_trained(variant)
    losses = [h["loss"] for h in t.trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0] - 0.3, losses
    lora = initial_model("05", ["--model_name_or_path", str(MINI)])
    assert count_parameters(t.trainer.model) == count_parameters(lora)  # peft's count: the same line as lesson 05
    quantised = [m for m in t.trainer.model.modules() if type(m).__module__.startswith("bitsandbytes")]
    assert len(quantised) == 4 * 4  # every Linear of the 4 layers; lm_head (the tied embedding) stays
    model, tokenizer = lesson_module("08", "infer").load_for_inference(str(t.out_dir))
    torch.testing.assert_close(probe_logits(model, tokenizer), probe_logits(t.trainer.model, tokenizer), atol=1e-5,
                               rtol=0)  # fmt: skip
    kwargs = {"max_new_tokens": 12, "do_sample": False}
    references = [greedy_reference(model, tokenizer, p, 12) for p in PROBE]
    assert generate_answers(model, tokenizer, PROBE[:1], kwargs) == references[:1]  # one prompt
    assert generate_answers(model, tokenizer, PROBE, kwargs) == references  # a left-padded batch


def test_adapter_records_the_quantisation_and_names_its_lesson(trained, capsys):
    """peft saves a QLoRA adapter as plain LORA; method.json says lesson 08 made it, and how the base was stored."""
    t = trained("qlora_nf4")
    assert json.loads((t.adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    record = json.loads((t.adapter / "method.json").read_text())
    assert record["method"] == "QLORA" and record["quantization"] == "nf4" and record["double_quant"] is True
    assert record["compute_dtype"] == "float32"  # this CPU's default
    fails_cleanly(capsys, "05", "infer", ["--adapter", str(t.out_dir), "--prompt", "x"], "made by 08-chatbot_qlora")
    lora = str(trained("lora_qkv").out_dir)
    fails_cleanly(capsys, "08", "infer", ["--adapter", lora, "--prompt", "x"], "made by 05-chatbot_lora")


def test_merge_into_the_dequantised_base_keeps_the_trained_function(trained, tmp_path, capsys):
    """--merge_to: dequant(W_q) + B @ A in fp32 equals the adapter on the quantised base; peft's merge into the
    quantised base quantises the sum again and changes the logits."""
    from transformers import AutoModelForCausalLM

    t = trained("qlora_nf4")
    infer = lesson_module("08", "infer")
    model, tokenizer = infer.load_for_inference(str(t.out_dir))
    unmerged = probe_logits(model, tokenizer)
    infer.main(["--adapter", str(t.out_dir), "--merge_to", str(tmp_path / "merged")])
    assert "quantization_config" not in json.loads((tmp_path / "merged" / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(probe_logits(merged, tokenizer), unmerged, atol=1e-5, rtol=0)
    with pytest.warns(UserWarning, match="rounding errors"):  # peft says so itself
        requantised = probe_logits(model.merge_and_unload(), tokenizer)
    assert (requantised - unmerged).abs().max() > 1e-3


# ---------------------------------------------------------------- device defaults
def parsed(argv, accelerator: bool, monkeypatch, tmp_path):
    import common.train_args

    monkeypatch.setattr(common.train_args, "_has_torch_accelerator", lambda: accelerator)
    train = lesson_module("08", "train")
    return train.parse_train_args(train.ScriptArguments, [*argv, "--output_dir", str(tmp_path)], train.LESSON_DIR,
                                  train.LEARNING_RATE)  # fmt: skip


@pytest.mark.parametrize(
    "argv, accelerator, expected",
    [
        ([], True, ("paged_adamw_32bit", True, "bfloat16", "cuda:0")),  # the source course's GPU recipe
        ([], False, ("adamw_torch_fused", False, "float32", "cpu")),  # what works on this CPU
        (["--use_cpu", "true"], True, ("adamw_torch_fused", False, "float32", "cpu")),  # the device the run uses
        (["--optim", "adamw_torch", "--activation_checkpointing", "false", "--compute_dtype", "float16"], True,
         ("adamw_torch", False, "float16", "cuda:0")),  # flags given win
        (["--activation_checkpointing", "true", "--compute_dtype", "bfloat16"], False,
         ("adamw_torch_fused", True, "bfloat16", "cpu")),
    ],
)  # fmt: skip
def test_defaults_follow_the_device_and_flags_win(argv, accelerator, expected, monkeypatch, tmp_path):
    args, training_args = parsed(argv, accelerator, monkeypatch, tmp_path)
    optim = getattr(training_args.optim, "value", training_args.optim)
    assert (optim, training_args.activation_checkpointing, args.compute_dtype, args.device) == expected
    assert args.choice.startswith(f"on {expected[3]}: --optim {optim}")  # the line add_method prints


# ---------------------------------------------------------------- memory
def test_weight_bytes_formula_equals_what_bitsandbytes_holds():
    """measure.kbit_memory's exact byte counts against the tensors bitsandbytes keeps for each mini-model matrix."""
    import bitsandbytes.functional as bnbf

    from measure.kbit_memory import linear_bytes

    def nbytes(*tensors):
        return sum(t.numel() * t.element_size() for t in tensors)

    for w in mini_weights().values():
        out_features, in_features = w.shape
        packed, s = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
        assert linear_bytes(out_features, in_features, "nf4") == nbytes(packed, s.absmax, s.code)
        packed, s = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
        held = nbytes(packed, s.absmax, s.code, s.offset.reshape(1), s.state2.absmax, s.state2.code)
        assert linear_bytes(out_features, in_features, "nf4+dq") == held
        codes, absmax, _ = bnbf.int8_vectorwise_quant(w.to(torch.float16))
        assert linear_bytes(out_features, in_features, "int8") == nbytes(codes, absmax)


def test_real_architecture_weight_bytes():
    from transformers import BloomConfig

    from common.models import REAL_CONFIG
    from measure.kbit_memory import weight_bytes

    figures = weight_bytes(BloomConfig(**REAL_CONFIG))
    assert figures["quantised_weights"] + figures["other_weights"] == 1_303_111_680
    assert figures["fp32"]["quantised_bytes"] == 4 * figures["quantised_weights"]
    sizes = [figures[f]["quantised_bytes"] for f in ("fp32", "bf16", "int8", "nf4", "nf4+dq")]
    assert sizes == sorted(sizes, reverse=True)
    readme = (ROOT / "08-chatbot_qlora" / "README.md").read_text(encoding="utf-8")
    for fmt in ("fp32", "bf16", "int8", "nf4", "nf4+dq"):
        assert f"{figures[fmt]['quantised_bytes']:,d}" in readme, fmt


@pytest.mark.slow
def test_memory_mode_runs_on_the_tiny_model(tiny_model_dir, tmp_path):
    """The code path of `bench.py --kbit-memory` (three processes), not its figures."""
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--kbit-memory", str(tmp_path / "unused"),
                           "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "work")],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| fp32 |", "| nf4 |", "| int8 |"))]
    assert len(rows) == 6  # the weight-bytes table and the training-step table
    assert not (tmp_path / "unused").exists()  # --model_name_or_path given: nothing written there


# ---------------------------------------------------------------- bad input
@pytest.fixture
def base_argv(tiny_model_dir, overfit_file, tmp_path):
    return ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(overfit_file),
            "--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--disable_tqdm", "true"]  # fmt: skip


def test_missing_bitsandbytes_says_how_to_install_it(base_argv, trained, tmp_path, capsys, monkeypatch):
    import importlib.util

    adapter = str(trained("qlora_nf4").out_dir)  # trained before bitsandbytes goes missing
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else
                        find_spec(name, *a))  # fmt: skip
    install = "pip install -r 08-chatbot_qlora/requirements.txt"
    fails_cleanly(capsys, "08", "train", base_argv, install)
    assert not (tmp_path / "out").exists()
    fails_cleanly(capsys, "08", "infer", ["--adapter", adapter, "--prompt", "x"], install)
    fails_cleanly(capsys, "08", "from_scratch", ["--model_name_or_path", str(MINI)], install)
    requirements = (ROOT / "08-chatbot_qlora" / "requirements.txt").read_text(encoding="utf-8")
    assert "bitsandbytes==" in requirements


@pytest.fixture(scope="module")
def quantised_folder(tmp_path_factory, tiny_model_dir):
    """A tiny model saved already quantised (nf4): its full-precision weights are gone."""
    quantize = lesson_module("08", "quantize")
    folder = tmp_path_factory.mktemp("quantised") / "tiny-nf4"
    model = quantize.load_quantized(str(tiny_model_dir), "nf4", True, "float32", "float32", "cpu")
    model.save_pretrained(folder)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "case, match",
    [
        ("already_quantised", "is already quantised"),
        ("compute_dtype_int8", "--compute_dtype is for 4-bit bases"),
        ("unknown_quantization", "invalid choice"),
    ],
)
def test_train_bad_input(case, match, base_argv, quantised_folder, tmp_path, capsys):
    argv = list(base_argv)
    if case == "already_quantised":
        argv[1] = str(quantised_folder)
    elif case == "compute_dtype_int8":
        argv += ["--quantization", "int8", "--compute_dtype", "bfloat16"]
    else:
        argv += ["--quantization", "int3"]
    if case == "unknown_quantization":  # argparse's own refusal: exit 2, its usage line
        with pytest.raises(SystemExit) as info:
            lesson_module("08", "train").main(argv)
        assert info.value.code == 2 and match in capsys.readouterr().err
    else:
        fails_cleanly(capsys, "08", "train", argv, match)
    assert not (tmp_path / "out").exists(), "a failed run must leave no output folder"


def test_merge_into_a_folder_that_holds_something_is_refused_before_loading(trained, tmp_path, capsys, monkeypatch):
    target = tmp_path / "merged"
    target.mkdir()
    (target / "config.json").write_text("{}")
    infer = lesson_module("08", "infer")
    monkeypatch.setattr(infer, "load_for_inference", lambda *a, **k: pytest.fail("loaded before refusing"))
    argv = ["--adapter", str(trained("qlora_nf4").out_dir), "--merge_to", str(target)]
    fails_cleanly(capsys, "08", "infer", argv, "exists and is not an empty folder")
    assert [p.name for p in target.iterdir()] == ["config.json"]
