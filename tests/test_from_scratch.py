"""Each lesson's from_scratch.py: the hand-made method computes what train.py's peft model computes.

Both models are built in-process (one subprocess checks the CLI), each variant once per session.
"""

import copy
import re
import subprocess
import sys

import pytest
import torch
from helpers import COURSE_COUNTS, REAL_CONFIG, ROOT, VARIANTS, assert_same_loss_and_gradients, lesson_module
from torch import nn
from transformers import AutoModelForCausalLM, BloomConfig

from common.check_by_hand import TOLERANCE, build, check, left_padded_batch, parse_args
from common.errors import UserError
from common.lessons import LESSONS
from common.models import load_base_model, load_tokenizer
from common.parameters import count_parameters

MARKERS = ("<!-- from-scratch:start -->", "<!-- from-scratch:end -->")


def scratch(variant: str):
    return lesson_module(VARIANTS[variant][0], "from_scratch")


def variant_args(variant: str, model_dir, extra=()):
    lesson, flags = VARIANTS[variant]
    return parse_args(ROOT / LESSONS[lesson], ["--model_name_or_path", str(model_dir), *flags, *extra], None)


def run_check(variant: str, model_dir):
    module = scratch(variant)
    return check(module.LESSON_DIR, module.by_hand, module.copy_values, variant_args(variant, model_dir))


@pytest.fixture(scope="module")
def checked(tiny_model_dir):
    cache = {}

    def get(variant):
        if variant not in cache:
            cache[variant] = run_check(variant, tiny_model_dir)
        return cache[variant]

    return get


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_counts_and_logits_match(variant, checked):
    result = checked(variant)
    assert result.hand_count == result.reference_count
    assert result.max_diff <= TOLERANCE
    assert result.ok


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_loss_and_gradients_match(variant, checked):
    """Same loss and same gradients on every trainable tensor: the hand-made version also trains the same way."""
    result = checked(variant)
    assert_same_loss_and_gradients(result, TOLERANCE)


def test_text_init_equals_peft_before_any_copy(tiny_model_dir):
    module = scratch("prompt_text")
    hand, peft_model, _ = build(module.LESSON_DIR, module.by_hand, lambda h, r: None,
                                variant_args("prompt_text", tiny_model_dir))  # fmt: skip
    assert torch.equal(hand.prompt_encoder.embedding.weight, peft_model.prompt_encoder["default"].embedding.weight)


@pytest.mark.parametrize("variant", ["lora_qkv_dense", "ia3"])
def test_hand_made_method_starts_at_the_base_model(variant, tiny_model_dir):
    """LoRA's B = 0, IA3's vectors = 1: before any training the hand-made model is the base model."""
    module, args = scratch(variant), variant_args(variant, tiny_model_dir)
    batch = left_padded_batch(load_tokenizer(str(tiny_model_dir)))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        base = load_base_model(str(tiny_model_dir)).eval()(**inputs).logits
        hand = module.by_hand(load_base_model(str(tiny_model_dir)), args).eval()(**inputs).logits
    assert torch.equal(hand, base)


@pytest.mark.parametrize("arch", ["bloom", "qwen2"])
def test_lora_all_linear_by_hand_equals_peft(arch, tiny_model_dir, other_model_dir):
    """Every Linear but the output layer, as peft selects them: same counts, logits, loss and gradients."""
    model_dir = tiny_model_dir if arch == "bloom" else other_model_dir(arch)
    module = scratch("lora_qkv")
    result = check(module.LESSON_DIR, module.by_hand, module.copy_values,
                   variant_args("lora_qkv", model_dir, ["--target_modules", "all-linear"]))  # fmt: skip
    assert result.ok, (result.hand_count, result.reference_count, result.max_diff)
    assert_same_loss_and_gradients(result, TOLERANCE)
    adapted = {n for n, m in result.hand.named_modules() if isinstance(m, module.LoRALinear)}
    linear = {n for n, m in result.hand.named_modules() if type(m) is torch.nn.Linear and ".lora_" not in n}
    assert len(adapted) > 2 * result.hand.config.num_hidden_layers  # more than the default's one or two per layer
    assert linear - {f"{n}.base_layer" for n in adapted} == {"lm_head"}  # every other Linear got LoRA


@pytest.mark.parametrize("variant", ["lora_qkv_dense", "lora_regex_emb"])
def test_lora_merge_by_hand_equals_merge_and_unload(variant, tiny_model_dir):
    module = scratch(variant)
    hand, peft_model, tokenizer = build(module.LESSON_DIR, module.by_hand, module.copy_values,
                                        variant_args(variant, tiny_model_dir))  # fmt: skip
    inputs = {k: v for k, v in left_padded_batch(tokenizer).items() if k != "labels"}
    with torch.no_grad():
        unmerged = hand(**inputs).logits
        merged_by_hand = module.merge_by_hand(copy.deepcopy(hand))
        assert not any(isinstance(m, module.LoRALinear) for m in merged_by_hand.modules())
        by_hand = merged_by_hand(**inputs).logits
        by_peft = peft_model.merge_and_unload()(**inputs).logits
    assert (by_hand - by_peft).abs().max().item() <= TOLERANCE
    assert (by_hand - unmerged).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("arch", ["bloom", "qwen2", "qwen3", "llama"])
def test_ia3_defaults_written_by_hand_are_peft_s(arch):
    """from_scratch.py keeps peft's default layers as a table; it must say what peft does."""
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
    )

    targets, feedforward = scratch("ia3").DEFAULT_LAYERS[arch]
    assert targets == TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING[arch]
    assert feedforward == TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING[arch]


def test_ia3_merge_by_hand_equals_merge_and_unload(tiny_model_dir):
    """Merging scales rows of W and b (output vectors) or columns of W (feed-forward input vectors): the same
    weights as peft's merge_and_unload, and the same logits as before merging."""
    module = scratch("ia3")
    hand, peft_model, tokenizer = build(module.LESSON_DIR, module.by_hand, module.copy_values,
                                        variant_args("ia3", tiny_model_dir))  # fmt: skip
    vectors = {n: m.ia3_l.detach().clone() for n, m in hand.named_modules() if isinstance(m, module.IA3Linear)}
    before = {k: v.clone() for k, v in hand.state_dict().items()}
    inputs = {k: v for k, v in left_padded_batch(tokenizer).items() if k != "labels"}
    with torch.no_grad():
        unmerged = hand(**inputs).logits
        merged = module.merge_by_hand(copy.deepcopy(hand))
        assert not any(isinstance(m, module.IA3Linear) for m in merged.modules())
        by_hand = merged(**inputs).logits
        by_peft = peft_model.merge_and_unload()
        peft_logits = by_peft(**inputs).logits
    assert (by_hand - unmerged).abs().max().item() <= TOLERANCE
    assert (by_hand - peft_logits).abs().max().item() <= TOLERANCE
    peft_state, hand_state = by_peft.state_dict(), merged.state_dict()
    assert peft_state.keys() == hand_state.keys()
    for key in hand_state:
        torch.testing.assert_close(hand_state[key], peft_state[key], atol=1e-6, rtol=0, msg=key)
    assert len(vectors) == 2 * hand.config.n_layer
    for name, vector in vectors.items():  # the rule, written out: diag(l) W and l * b, or W diag(l) and b
        scale = vector.flatten()
        weight, bias = before[f"{name}.base_layer.weight"], before[f"{name}.base_layer.bias"]
        if name.endswith("dense_4h_to_h"):
            expected_weight, expected_bias = weight @ torch.diag(scale), bias
        else:
            expected_weight, expected_bias = torch.diag(scale) @ weight, scale * bias
            assert not torch.allclose(expected_bias, bias)  # a merge that forgot the bias would be caught
        torch.testing.assert_close(hand_state[f"{name}.weight"], expected_weight, atol=1e-6, rtol=0)
        torch.testing.assert_close(hand_state[f"{name}.bias"], expected_bias, atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant", list(COURSE_COUNTS))
def test_hand_made_counts_reproduce_the_course_table(variant, real_architecture_dir):
    """Real bloom-1b4-zh architecture on the meta device: the hand-made modules alone give every row."""
    args = variant_args(variant, real_architecture_dir)
    tokenizer = load_tokenizer(str(real_architecture_dir))
    with torch.device("meta"):
        model = scratch(variant).by_hand(AutoModelForCausalLM.from_config(BloomConfig(**REAL_CONFIG)), args, tokenizer)
    assert count_parameters(model) == COURSE_COUNTS[variant]


def _broken_mask(mask, n):  # the virtual tokens get mask 0: the model never looks at them
    return torch.cat([mask.new_zeros(mask.shape[0], n), mask], dim=1)


def _broken_cache(prefix, layers, heads):  # heads and head_dim swapped when cutting the vector
    from transformers import DynamicCache

    batch, nvt, width = prefix.shape
    kv = prefix.view(batch, nvt, 2 * layers, width // (2 * layers * heads), heads).permute(2, 0, 4, 1, 3)
    return DynamicCache([(kv[2 * i], kv[2 * i + 1]) for i in range(layers)])


def _linear_biases_only(model, args=None, tokenizer=None):  # misses LayerNorm biases: not the course's BitFit
    model.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.requires_grad_(True)
    return model


class _BiasOutsideTheScaling(nn.Module):  # l * (W x) + b: IA3's output vector misses the bias
    def __init__(self, base_layer, is_feedforward):
        super().__init__()
        self.base_layer, self.is_feedforward = base_layer, is_feedforward
        shape = (1, base_layer.in_features) if is_feedforward else (base_layer.out_features, 1)
        self.ia3_l = nn.Parameter(torch.ones(shape))

    def forward(self, x):
        if self.is_feedforward:
            return self.base_layer(x * self.ia3_l.flatten())
        return nn.functional.linear(x, self.base_layer.weight) * self.ia3_l.flatten() + self.base_layer.bias


@pytest.mark.parametrize(
    "variant, attribute, broken",
    [("prompt_random", "extend_mask", _broken_mask), ("ptuning_lstm", "extend_mask", _broken_mask),
     ("prefix_proj", "to_cache", _broken_cache), ("bitfit", "by_hand", _linear_biases_only),
     ("ia3", "IA3Linear", _BiasOutsideTheScaling)],
)  # fmt: skip
def test_a_wrong_hand_made_version_fails_the_check(variant, attribute, broken, monkeypatch, tiny_model_dir):
    monkeypatch.setattr(scratch(variant), attribute, broken)
    module = scratch(variant)
    result = check(module.LESSON_DIR, module.by_hand, module.copy_values, variant_args(variant, tiny_model_dir))
    assert result.max_diff > TOLERANCE and not result.ok


@pytest.mark.slow
def test_cli_last_line_and_exit_code(tiny_model_dir):
    script = ROOT / LESSONS["04"] / "from_scratch.py"
    proc = subprocess.run([sys.executable, str(script), "--model_name_or_path", str(tiny_model_dir),
                           "--prefix_projection", "true"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"max \|logit difference\| vs peft: (\S+)", last)
    assert match and float(match.group(1)) <= TOLERANCE


def test_bad_model_path_is_a_user_error():
    with pytest.raises(UserError, match="model not found"):
        scratch("lora_qkv").main(["--model_name_or_path", "./no-such-model"])


# the one tiny-model run each lesson README pastes in its from-scratch section
SHOWN_RUN = ["bitfit", "prompt_text", "ptuning_mlp", "prefix", "lora_regex_emb", "ia3", "qlora_nf4"]


@pytest.mark.parametrize("variant", SHOWN_RUN)
def test_readme_shows_what_the_script_prints(variant, tiny_model_dir, capsys):
    """The lesson README's from-scratch section holds every line this variant prints on the tiny model, but the
    last: the measured difference, which may vary in the last digits between machines."""
    module = scratch(variant)
    capsys.readouterr()
    assert module.main(["--model_name_or_path", str(tiny_model_dir), *VARIANTS[variant][1]]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    readme = (module.LESSON_DIR / "README.md").read_text(encoding="utf-8")
    assert readme.count(MARKERS[0]) == 1 and readme.count(MARKERS[1]) == 1
    section = readme.split(MARKERS[0])[1].split(MARKERS[1])[0]
    assert section.count("from_scratch.py --model_name_or_path tiny-bloom") == 1  # one pasted run
    for line in printed[:-1]:
        assert line in section, line
    assert re.fullmatch(r"max \|logit difference\| vs (peft|add_method): \S+", printed[-1])


@pytest.mark.parametrize("lesson", list(LESSONS))
def test_readme_meta_excerpt_is_what_its_code_prints(lesson, monkeypatch, capsys):
    """The section's python block, run from the repository root, prints the block that follows it."""
    readme = (ROOT / LESSONS[lesson] / "README.md").read_text(encoding="utf-8")
    section = readme.split(MARKERS[0])[1].split(MARKERS[1])[0]
    code, after = section.split("```python\n")[1].split("\n```\n", 1)
    shown = after.split("```\n")[1].split("\n```")[0]
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "from_scratch", raising=False)  # each lesson has its own
    capsys.readouterr()
    exec(compile(code, f"{LESSONS[lesson]}/README.md", "exec"), {"__name__": "readme_excerpt"})
    assert capsys.readouterr().out.strip() == shown.strip()


@pytest.mark.parametrize("lesson", list(LESSONS))
def test_the_hand_made_half_imports_neither_peft_nor_common(lesson):
    """Module-level imports are the hand-made half's; the comparison imports common inside main()."""
    import ast

    tree = ast.parse((ROOT / LESSONS[lesson] / "from_scratch.py").read_text(encoding="utf-8"))
    imported = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] in ("peft", "common")]
