"""LoRA with `modules_to_save=word_embeddings` on a BLOOM whose embeddings are tied, as bloom-1b4-zh's are (the
tiny model of the other tests is untied): what peft trains, what `infer.py --merge_to` writes, and what peft
0.21.2's `ensure_weight_tying` does with BLOOM's module names."""

import json
import warnings

import pytest
import torch
from helpers import lesson_module, probe_logits

LESSON_05_FLAGS = [
    "--target_modules", r".*\.1.*query_key_value", "--modules_to_save", "word_embeddings",
    "--max_steps", "20", "--learning_rate", "1e-2", "--per_device_train_batch_size", "4",
    "--gradient_accumulation_steps", "1", "--save_strategy", "no", "--disable_tqdm", "true",
]  # fmt: skip


@pytest.fixture(scope="module")
def tied_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model's tokenizer and shapes, with tied embeddings (the real model's setting)."""
    from transformers import AutoTokenizer, BloomConfig, BloomForCausalLM

    config = BloomConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    model = BloomForCausalLM(config)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    folder = tmp_path_factory.mktemp("tied") / "tiny-bloom-tied"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tied_run(tied_model_dir, overfit_file, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tied_lora") / "output"
    argv = ["--model_name_or_path", str(tied_model_dir), "--dataset", str(overfit_file), "--output_dir", str(out_dir)]
    lesson_module("05", "train").main(argv + LESSON_05_FLAGS)
    return out_dir


def test_merge_keeps_lm_head_on_the_frozen_embeddings(tied_run, tmp_path):
    from transformers import AutoModelForCausalLM

    infer = lesson_module("05", "infer")
    model, tokenizer = infer.load_for_inference(str(tied_run))
    base = model.get_base_model()
    embeddings = base.get_input_embeddings()  # peft's ModulesToSaveWrapper
    # the trained copy feeds the input side; lm_head stays tied to the frozen original
    assert base.get_output_embeddings().weight is embeddings.original_module.weight
    assert not torch.equal(embeddings.modules_to_save["default"].weight, embeddings.original_module.weight)
    expected = probe_logits(model, tokenizer)

    merged_dir = tmp_path / "merged"
    with pytest.warns(UserWarning, match="no longer tied after merging"):  # peft's merge_and_unload unties
        infer.main(["--adapter", str(tied_run), "--merge_to", str(merged_dir)])
    assert json.loads((merged_dir / "config.json").read_text(encoding="utf-8"))["tie_word_embeddings"] is False
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert merged.get_input_embeddings().weight is not merged.get_output_embeddings().weight
    assert (probe_logits(merged, tokenizer) - expected).abs().max().item() <= 1e-5

    # the untie matters: tied again, lm_head would read the trained copy and the answers would change
    merged.get_output_embeddings().weight = merged.get_input_embeddings().weight
    assert (probe_logits(merged, tokenizer) - expected).abs().max().item() > 1e-3


def peft_on_tied(model_dir, modules_to_save):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = LoraConfig(task_type="CAUSAL_LM", target_modules=["query_key_value"], modules_to_save=modules_to_save,
                        ensure_weight_tying=True)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config)
    return model.get_base_model(), [str(w.message) for w in caught]


def test_ensure_weight_tying_ignores_bloom_word_embeddings(tied_model_dir):
    # peft 0.21.2 recognises tied embeddings by the names embed_tokens and lm_head only: BLOOM's word_embeddings
    # gets a warning and the same untied copy as without the option
    base, messages = peft_on_tied(tied_model_dir, ["word_embeddings"])
    assert any("no tied modules are added" in m for m in messages), messages
    embeddings = base.get_input_embeddings()
    assert base.get_output_embeddings().weight is embeddings.original_module.weight


def test_ensure_weight_tying_with_lm_head_trains_one_shared_copy(tied_model_dir):
    base, _ = peft_on_tied(tied_model_dir, ["lm_head"])
    embeddings, head = base.get_input_embeddings(), base.get_output_embeddings()
    assert head.modules_to_save["default"].weight is embeddings.modules_to_save["default"].weight
