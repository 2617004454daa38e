"""Issue 20: the lessons on tiny random Qwen2 (grouped-query attention, q/k/v biases), Qwen3 (explicit head_dim,
no biases) and Llama (no biases), built from their config classes: train, save, reload, generate exactly right."""

import json

import pytest
import torch
from helpers import PROBE, assert_same_loss_and_gradients, fails_cleanly, greedy_reference, lesson_module, probe_logits

from common.course_template import build_prompt

MAX_NEW = 12
PROMPTS = [PROBE[0], "你好", PROBE[1]]  # different lengths, so a batch is left-padded
ARCHS = ("qwen2", "qwen3", "llama")
# the course variants that apply to every architecture (lora_qkv's flags are empty: peft's default targets);
# lora_qkv_dense and lora_regex_emb name BLOOM's modules
GENERIC = ["prompt_text", "prompt_random", "ptuning_mlp", "ptuning_lstm", "prefix", "prefix_proj", "lora_qkv", "ia3"]
# one case per architecture stays in `make test-fast`; GQA's prefix and LoRA's default targets among them
FAST = {("qwen2", "prefix"), ("qwen3", "lora_qkv"), ("llama", "prompt_text")}


def cases():
    pairs = [(arch, v) for arch in ARCHS for v in GENERIC] + [("qwen2", "bitfit")]
    return [pytest.param(a, v, marks=() if (a, v) in FAST else pytest.mark.slow, id=f"{a}-{v}") for a, v in pairs]


def run_infer(lesson, capsys, *argv):
    capsys.readouterr()
    lesson_module(lesson, "infer").main(list(argv))
    return capsys.readouterr().out


@pytest.mark.parametrize(("arch", "variant"), cases())
def test_variant_trains_reloads_and_generates_like_the_greedy_reference(arch, variant, trained_other, capsys,
                                                                        tmp_path):  # fmt: skip
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t = trained_other(arch, variant)
    losses = [h["loss"] for h in t.trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0] - 0.3, losses
    # a reload through the lesson's infer.py reproduces the trained model's logits
    model, tokenizer = lesson_module(t.lesson, "infer").load_for_inference(str(t.out_dir))
    expected = probe_logits(t.trainer.model, t.trainer.processing_class)
    torch.testing.assert_close(probe_logits(model, tokenizer), expected, atol=1e-5, rtol=0)
    # generate() (single prompt, and a left-padded batch) equals a no-cache greedy decode, and the adapter matters
    reference = [greedy_reference(model, tokenizer, p, MAX_NEW) for p in PROMPTS]
    base_dir = t.argv[t.argv.index("--model_name_or_path") + 1]
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    assert reference != [greedy_reference(base, AutoTokenizer.from_pretrained(base_dir), p, MAX_NEW) for p in PROMPTS]
    greedy = ["--adapter", str(t.out_dir), "--do_sample", "false", "--max_new_tokens", str(MAX_NEW)]
    assert run_infer(t.lesson, capsys, *greedy, "--prompt", PROMPTS[0]).strip() == reference[0]
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(p.replace("\n", " ") for p in PROMPTS[:2]) + "\n", encoding="utf-8")
    rows = [json.loads(line) for line in run_infer(t.lesson, capsys, *greedy, "--input_file", str(prompts_file))
            .splitlines()]  # fmt: skip
    assert [r["response"] for r in rows] == reference[:2]


def test_bitfit_trains_exactly_qwen2s_qkv_biases(other_model_dir):
    from helpers import initial_model

    model = initial_model("01", ["--model_name_or_path", str(other_model_dir("qwen2"))])
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert {n.rsplit(".", 2)[-2] for n in trainable} == {"q_proj", "k_proj", "v_proj"}
    cfg = model.config  # per layer: q has heads x head_dim, k and v have kv_heads x head_dim
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_layer = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * head_dim
    assert sum(trainable.values()) == cfg.num_hidden_layers * per_layer == 256


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_bitfit_refuses_a_model_without_biases(arch, other_model_dir, overfit_file, tmp_path, capsys):
    argv = ["--model_name_or_path", str(other_model_dir(arch)), "--dataset", str(overfit_file),
            "--output_dir", str(tmp_path / "out"), "--max_steps", "1"]  # fmt: skip
    fails_cleanly(capsys, "01", "train", argv, "no bias parameters")
    assert not (tmp_path / "out" / "adapter").exists()


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_width_follows_the_key_value_heads(arch, other_model_dir):
    """Per layer the prefix is 2 x num_key_value_heads x head_dim wide (GQA), not 2 x hidden."""
    from helpers import initial_model

    argv = ["--model_name_or_path", str(other_model_dir(arch)), "--prefix_projection", "false"]
    model = initial_model("04", argv)
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    nvt = model.peft_config["default"].num_virtual_tokens
    width = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim
    assert model.get_nb_trainable_parameters()[0] == nvt * width
    assert width < 2 * cfg.num_hidden_layers * cfg.hidden_size


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_default_and_all_linear_targets_are_printed(arch, other_model_dir, capsys):
    from helpers import initial_model

    base = ["--model_name_or_path", str(other_model_dir(arch))]
    capsys.readouterr()
    default = initial_model("05", base)
    assert capsys.readouterr().out.strip() == f"LoRA target modules: q_proj, v_proj (peft's default for {arch})"
    assert {n.split(".")[-4] for n, p in default.named_parameters() if p.requires_grad} == {"q_proj", "v_proj"}
    every = initial_model("05", [*base, "--target_modules", "all-linear"])
    assert capsys.readouterr().out.strip().startswith("LoRA target modules: all-linear")
    adapted = {n.split(".")[-4] for n, p in every.named_parameters() if p.requires_grad}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # not lm_head


@pytest.mark.parametrize("arch", ["qwen3", pytest.param("qwen2", marks=pytest.mark.slow)])
def test_lora_merge_and_pipeline_give_the_same_answer(arch, trained_other, capsys, tmp_path):
    from transformers import pipeline

    t = trained_other(arch, "lora_qkv")
    model, tokenizer = lesson_module("05", "infer").load_for_inference(str(t.out_dir))
    reference = greedy_reference(model, tokenizer, PROMPTS[0], MAX_NEW)
    run_infer("05", capsys, "--adapter", str(t.out_dir), "--merge_to", str(tmp_path / "merged"))
    pipe = pipeline("text-generation", model=str(tmp_path / "merged"), device="cpu")
    out = pipe(build_prompt(PROMPTS[0]), max_new_tokens=MAX_NEW, do_sample=False, return_full_text=False)
    assert out[0]["generated_text"].strip() == reference


# the variants that apply to every architecture, in the order docs/other_models.md shows them
DOC_VARIANTS = ["bitfit", *GENERIC]


def test_docs_show_exactly_what_compare_prints_for_other_architectures(other_real_architecture_dirs):
    """docs/other_models.md's tables are count_table(count_variants(...)): what compare.py prints."""
    import re

    from helpers import ROOT

    from measure.counts import count_table, count_variants

    doc = (ROOT / "docs" / "other_models.md").read_text(encoding="utf-8")
    for name, folder in other_real_architecture_dirs.items():
        marker = f"<!-- other-table:{re.escape(name)}"
        block = re.search(rf"{marker}:start -->\n(.*?)\n{marker}:end -->", doc, re.S)
        assert block, f"docs/other_models.md lacks the {name} table markers"
        assert block.group(1).strip() == count_table(count_variants(str(folder), DOC_VARIANTS))


def test_hand_derivations_of_the_gqa_prefix_and_the_bias_count(other_real_architecture_dirs):
    from measure.counts import OTHER_REAL_CONFIGS, count_variants

    for name, folder in other_real_architecture_dirs.items():
        c = OTHER_REAL_CONFIGS[name]
        head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        rows = {r["variant"]: r for r in count_variants(str(folder), ["bitfit", "prefix", "ia3"])}
        assert (
            rows["prefix"]["trainable_params"] == 2 * c["num_hidden_layers"] * 10 * c["num_key_value_heads"] * head_dim
        )
        # IA3 on Qwen: one vector on q_proj's and v_proj's outputs and on down_proj's input, per layer
        per_layer = (c["num_attention_heads"] + c["num_key_value_heads"]) * head_dim + c["intermediate_size"]
        assert rows["ia3"]["trainable_params"] == c["num_hidden_layers"] * per_layer
        if c["model_type"] == "qwen2":  # q has heads x head_dim biases, k and v kv_heads x head_dim each
            per_layer = (c["num_attention_heads"] + 2 * c["num_key_value_heads"]) * head_dim
            assert rows["bitfit"]["trainable_params"] == c["num_hidden_layers"] * per_layer == 27_648
        else:
            assert rows["bitfit"]["trainable_params"] is None and "no bias" in rows["bitfit"]["refused"]


def by_hand_cases():
    pairs = [(arch, v) for arch in ARCHS for v in GENERIC] + [("qwen2", "bitfit")]
    return [pytest.param(a, v, id=f"{a}-{v}") for a, v in pairs]


@pytest.mark.parametrize(("arch", "variant"), by_hand_cases())
def test_from_scratch_equals_peft_counts_logits_loss_and_gradients(arch, variant, other_model_dir):
    """Each lesson's hand-made method on GQA models (for prefix tuning: the key/value-head cache layout)."""
    from helpers import ROOT, VARIANTS

    from common.check_by_hand import TOLERANCE, check, parse_args
    from common.lessons import LESSONS

    lesson, flags = VARIANTS[variant]
    module = lesson_module(lesson, "from_scratch")
    args = parse_args(ROOT / LESSONS[lesson], ["--model_name_or_path", str(other_model_dir(arch)), *flags], None)
    result = check(module.LESSON_DIR, module.by_hand, module.copy_values, args)
    assert result.ok, (result.hand_count, result.reference_count, result.max_diff)
    assert_same_loss_and_gradients(result, TOLERANCE)
