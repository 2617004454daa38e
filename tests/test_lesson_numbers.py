"""Numbers the lesson READMEs state beyond the count table, computed here on the real architecture (meta device)."""

import pytest
import torch
from helpers import REAL_CONFIG, ROOT, VARIANTS, real_architecture_model
from transformers import AutoModelForCausalLM, BloomConfig

from common.lessons import LESSONS
from common.parameters import count_parameters


def readme(lesson: str | None = None) -> str:
    return (ROOT / (LESSONS[lesson] if lesson else "") / "README.md").read_text(encoding="utf-8")


def saved_numbers(variant: str, model) -> int:
    """How many numbers the final artifact holds: prompt learning keeps only the final virtual tokens."""
    if variant == "bitfit":
        return count_parameters(model)[0]
    config = model.peft_config["default"]
    if config.is_prompt_learning:
        per_token = config.token_dim * (config.num_layers * 2 if config.peft_type.value == "PREFIX_TUNING" else 1)
        return config.num_virtual_tokens * per_token
    from peft import get_peft_model_state_dict

    return sum(t.numel() for t in get_peft_model_state_dict(model).values())


@pytest.mark.parametrize(("variant", "expected"), [("ptuning_mlp", 5_267_456), ("ptuning_lstm", 58_777_600)])
def test_p_tuning_with_a_1024_encoder(variant, expected, tiny_model_dir):
    trainable = count_parameters(real_architecture_model(variant, tiny_model_dir, ["--encoder_hidden_size", "1024"]))[0]
    assert trainable == expected
    assert f"{expected:,d}" in readme("03")


def test_embedding_copy_of_modules_to_save(tiny_model_dir):
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(BloomConfig(**REAL_CONFIG))
    n = model.get_input_embeddings().weight.numel()
    assert n == 46_145 * 2048 == 94_504_960
    assert "46,145 × 2048 = 94,504,960" in readme("05")


@pytest.mark.parametrize(("r", "expected"), [(4, 786_432), (16, 3_145_728)])
def test_lora_rank_counts(r, expected, tiny_model_dir):
    assert count_parameters(real_architecture_model("lora_qkv", tiny_model_dir, ["--lora_r", str(r)]))[0] == expected
    assert f"{expected:,d}" in readme("05")


def test_regex_hits_eleven_layers(tiny_model_dir):
    model = real_architecture_model("lora_regex_emb", tiny_model_dir)
    hit = sorted(int(n.split(".h.")[1].split(".")[0]) for n, m in model.named_modules()
                 if n.endswith("query_key_value") and hasattr(m, "lora_A"))  # fmt: skip
    assert hit == [1, *range(10, 20)]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_saved_artifact_sizes_in_readme(variant, tiny_model_dir):
    """docs/inference.md's size table: numbers saved x 4 bytes (fp32), as each lesson's save writes them."""
    numbers = saved_numbers(variant, real_architecture_model(variant, tiny_model_dir))
    doc = (ROOT / "docs" / "inference.md").read_text(encoding="utf-8")
    label = next(line for line in doc.splitlines() if line.startswith(f"| `{variant}` |"))
    assert f"| {numbers:,d} | {numbers * 4:,d} |" in label, label
