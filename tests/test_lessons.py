"""Every variant of every lesson, trained on the tiny model: what training changes, what it saves, and that
the saved artifact reloads and generates exactly right."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import (
    FAST_VARIANTS,
    PROBE,
    ROOT,
    TRAIN_FLAGS,
    greedy_reference,
    initial_model,
    lesson_module,
    probe_logits,
    variant_params,
)
from safetensors.torch import load_file

from common.lessons import LESSONS, REGISTRY

LESSON_METHOD = {lesson.number: lesson.method for lesson in REGISTRY}

MAX_NEW = 12
PROMPTS = [PROBE[0], "你好", PROBE[1]]  # different lengths, so a batch is left-padded


@pytest.mark.parametrize("variant", variant_params())
def test_loss_falls_under_default_learning_rate(variant, trained):
    losses = [h["loss"] for h in trained(variant).trainer.state.log_history if "loss" in h]
    assert len(losses) >= 5
    assert losses[-1] < losses[0] - 0.3, losses


@pytest.mark.parametrize("variant", variant_params())
def test_only_trainable_tensors_change(variant, trained):
    t = trained(variant)
    before = dict(initial_model(t.lesson, t.argv).named_parameters())
    after = dict(t.trainer.model.named_parameters())
    assert before.keys() == after.keys()
    trainable = [n for n, p in after.items() if p.requires_grad]
    assert trainable
    for name, p in after.items():
        if p.requires_grad:
            assert not torch.equal(p.detach(), before[name].detach()), f"{name} did not train"
        else:
            assert torch.equal(p.detach(), before[name].detach()), f"frozen {name} changed"
    if variant == "bitfit":
        assert all("bias" in n for n in trainable)


@pytest.mark.parametrize("variant", variant_params())
def test_saved_folder_holds_only_the_adapter(variant, trained, tiny_model_dir):
    t = trained(variant)
    files = {p.name for p in t.adapter.iterdir()}
    tokenizer_files = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"}
    if variant == "bitfit":
        assert files - tokenizer_files == {"bitfit_biases.safetensors", "method.json"}
        saved = load_file(t.adapter / "bitfit_biases.safetensors")
        biases = {n for n, _ in t.trainer.model.named_parameters() if "bias" in n}
        assert set(saved) == biases
    else:  # peft's files, plus the lesson's own method record where peft's type does not name the lesson
        record = {"method.json"} if LESSON_METHOD[t.lesson] != json.loads(
            (t.adapter / "adapter_config.json").read_text(encoding="utf-8"))["peft_type"] else set()  # fmt: skip
        expected = {"adapter_config.json", "adapter_model.safetensors"} | record
        assert files - tokenizer_files - {"README.md"} == expected
    weights = sum(p.stat().st_size for p in t.adapter.iterdir() if p.suffix == ".safetensors")
    assert weights < (tiny_model_dir / "model.safetensors").stat().st_size / 2
    assert not list(t.out_dir.glob(".adapter.*")), "temporary save folders left behind"
    for checkpoint in t.out_dir.glob("checkpoint-*"):
        assert not (checkpoint / "model.safetensors").exists()


@pytest.fixture(scope="session")
def reloaded_logits(request, trained, tmp_path_factory):
    """The selected variants reloaded in one fresh process (one import cost), each by its lesson's infer.py."""
    out = tmp_path_factory.mktemp("reload") / "logits.safetensors"
    selected = [item.callspec.params["variant"] for item in request.session.items
                if item.originalname == "test_fresh_process_reload_gives_identical_logits"]  # fmt: skip
    specs = [f"{v}={trained(v).lesson}={trained(v).adapter}" for v in selected]
    subprocess.run([sys.executable, str(ROOT / "tests" / "reload_logits.py"), str(out), *specs], check=True,
                   cwd=ROOT / "tests", env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    return load_file(out)


@pytest.mark.parametrize("variant", variant_params())
def test_fresh_process_reload_gives_identical_logits(variant, trained, reloaded_logits):
    t = trained(variant)
    expected = probe_logits(t.trainer.model, t.trainer.processing_class)
    torch.testing.assert_close(reloaded_logits[variant], expected, atol=1e-5, rtol=0)


def run_infer(lesson, capsys, *argv):
    capsys.readouterr()
    lesson_module(lesson, "infer").main(list(argv))
    return capsys.readouterr().out


@pytest.fixture(scope="session")
def base_answers(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return [greedy_reference(model, tokenizer, p, MAX_NEW) for p in PROMPTS]


@pytest.mark.parametrize("variant", variant_params())
def test_generation_equals_greedy_reference(variant, trained, base_answers, capsys, tmp_path):
    t = trained(variant)
    model, tokenizer = lesson_module(t.lesson, "infer").load_for_inference(str(t.out_dir))
    reference = [greedy_reference(model, tokenizer, p, MAX_NEW) for p in PROMPTS]
    # the adapter must really change the answer, or this test could not catch a generate() that ignores it
    assert reference != base_answers
    greedy = ["--adapter", str(t.out_dir), "--do_sample", "false", "--max_new_tokens", str(MAX_NEW)]
    assert run_infer(t.lesson, capsys, *greedy, "--prompt", PROMPTS[0]).strip() == reference[0]
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(p.replace("\n", " ") for p in PROMPTS[:2]) + "\n", encoding="utf-8")
    lines = run_infer(t.lesson, capsys, *greedy, "--input_file", str(prompts_file)).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["prompt"] for r in rows] == PROMPTS[:2]
    assert [r["response"] for r in rows] == reference[:2]


@pytest.mark.parametrize("variant", variant_params(["bitfit", "lora_qkv", "lora_regex_emb", "ia3", "qlora_nf4"]))
def test_merged_model_gives_the_same_answer(variant, trained, capsys, tmp_path):
    from transformers import pipeline

    t = trained(variant)
    model, tokenizer = lesson_module(t.lesson, "infer").load_for_inference(str(t.out_dir))
    reference = greedy_reference(model, tokenizer, PROMPTS[0], MAX_NEW)
    run_infer(t.lesson, capsys, "--adapter", str(t.out_dir), "--merge_to", str(tmp_path / "merged"))
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    pipe = pipeline("text-generation", model=str(tmp_path / "merged"), device="cpu")
    from common.course_template import build_prompt

    out = pipe(build_prompt(PROMPTS[0]), max_new_tokens=MAX_NEW, do_sample=False, return_full_text=False)
    assert out[0]["generated_text"].strip() == reference


@pytest.mark.parametrize("lesson", ["02", "03", "04"])
def test_merge_is_refused_where_impossible(lesson, trained, tmp_path):
    from common.errors import UserError

    variant = FAST_VARIANTS[lesson]
    with pytest.raises(UserError, match="cannot be merged"):
        lesson_module(lesson, "infer").main(["--adapter", str(trained(variant).out_dir), "--merge_to", str(tmp_path)])


def test_lessons_differ_only_in_the_method():
    """main() is the same in every lesson: a learner's diff shows only the method."""
    mains = {
        ls: (ROOT / d / "train.py").read_text(encoding="utf-8").split("\ndef main")[1] for ls, d in LESSONS.items()
    }
    assert len(set(mains.values())) == 1, "main() differs between lessons"


@pytest.mark.parametrize("variant", variant_params())
def test_results_file_holds_the_runs_figures(variant, trained):
    """results.json, what compare.py and bench.py read: the printed counts, the Trainer's own figures."""
    from common.parameters import trainable_parameters_line
    from common.results import loss_curve, read_results

    t = trained(variant)
    results = read_results(t.out_dir)
    model = t.trainer.model
    assert trainable_parameters_line(model).startswith(
        f"trainable params: {results['trainable_params']:,d} || all params: {results['all_params']:,d} ||"
    )
    state = t.trainer.state
    assert results["log_history"] == state.log_history
    assert loss_curve(results) == [(h["step"], h["loss"]) for h in state.log_history if "loss" in h]
    assert results["num_input_tokens_seen"] == state.num_input_tokens_seen > 0
    assert results["train_samples_per_second"] > 0 and results["peak_memory_mb"] > 0


def test_known_bad_transformers_release_is_refused_for_prompt_learning(trained, monkeypatch):
    import transformers

    from common.errors import UserError
    from common.generation import generate_answers

    model, tokenizer = lesson_module("04", "infer").load_for_inference(str(trained("prefix").out_dir))
    monkeypatch.setattr(transformers, "__version__", "5.24.0")
    with pytest.raises(UserError, match="generates wrong answers"):
        generate_answers(model, tokenizer, ["你好"], {"max_new_tokens": 2, "do_sample": False})
    lora, tokenizer = lesson_module("05", "infer").load_for_inference(str(trained("lora_qkv").out_dir))
    assert generate_answers(lora, tokenizer, ["你好"], {"max_new_tokens": 2, "do_sample": False})  # LoRA is fine


def test_bitfit_keeps_trained_biases_in_fp32_on_a_half_precision_base(tiny_model_dir):
    train = lesson_module("01", "train")
    args, _ = train.parse_train_args(train.ScriptArguments, ["--model_name_or_path", str(tiny_model_dir),
                                                             "--dtype", "float16", "--fp16", "true"], train.LESSON_DIR,
                                       1e-3)  # fmt: skip
    model = train.add_method(train.load_base_model(args.model_name_or_path, args.dtype), args, None)
    norms = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "bias" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if n in norms} == {torch.float32}  # a LayerNorm wants one dtype
    assert {d for n, d in dtypes.items() if "bias" not in n and n not in norms} == {torch.float16}


def test_bitfit_trains_on_a_bf16_base_under_autocast(tiny_model_dir):
    """--dtype bfloat16 --bf16 true: fp32 biases next to bf16 weights must not break a training step."""
    train = lesson_module("01", "train")
    model = train.add_method(train.load_base_model(str(tiny_model_dir), "bfloat16"), None, None)
    ids = torch.arange(3, 11).unsqueeze(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
@pytest.mark.parametrize("lesson", ["01", "05", "08"])
def test_cli_end_to_end_as_a_user_runs_it(lesson, tiny_model_dir, overfit_file, tmp_path):
    """train.py, then infer.py --prompt, --input_file and the interactive chat, each in its own process."""
    folder = ROOT / LESSONS[lesson]
    out = tmp_path / "out"
    train_cmd = [sys.executable, str(folder / "train.py"), "--model_name_or_path", str(tiny_model_dir),
                 "--dataset", str(overfit_file), "--output_dir", str(out), *TRAIN_FLAGS]  # fmt: skip
    done = subprocess.run(train_cmd, capture_output=True, text=True, cwd=tmp_path)  # any working directory
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trainable params: " in done.stdout
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[-1] < losses[0] - 0.3

    model, tokenizer = lesson_module(lesson, "infer").load_for_inference(str(out))
    reference = [greedy_reference(model, tokenizer, p, MAX_NEW) for p in PROMPTS[:2]]
    greedy = [sys.executable, str(folder / "infer.py"), "--adapter", str(out), "--do_sample", "false",
              "--max_new_tokens", str(MAX_NEW)]  # fmt: skip
    single = subprocess.run(greedy + ["--prompt", PROMPTS[0]], capture_output=True, text=True, check=True)
    assert single.stdout.strip() == reference[0]  # only the answer on stdout; logs go to stderr
    (tmp_path / "q.txt").write_text("\n".join(PROMPTS[:2]) + "\n", encoding="utf-8")
    batch = subprocess.run(greedy + ["--input_file", str(tmp_path / "q.txt")], capture_output=True, text=True,
                           check=True)  # fmt: skip
    assert [json.loads(line)["response"] for line in batch.stdout.splitlines()] == reference
    chat = subprocess.run(greedy, input=PROMPTS[0] + "\n\n", capture_output=True, text=True, check=True)
    assert chat.stdout.startswith("Human: Assistant: " + reference[0])
