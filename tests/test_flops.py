"""The useful-FLOPs formula (measure/flops.py) against torch's own FLOP counter on a real training step."""

import pytest
import torch
from helpers import VARIANTS, initial_model, variant_params
from torch.utils.flop_counter import FlopCounterMode

from measure.flops import row_flops


def counted_step_flops(model, n: int) -> int:
    """FLOPs torch counts in one forward and backward pass of one unpadded row of n tokens."""
    ids = torch.arange(3, 3 + n).unsqueeze(0)
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("variant", variant_params())
@pytest.mark.parametrize("n", [1, 17])
def test_formula_equals_torch_flop_counter(variant, n, tiny_model_dir):
    lesson, flags = VARIANTS[variant]
    model = initial_model(lesson, ["--model_name_or_path", str(tiny_model_dir), *flags])
    formula = row_flops(model).row(n)
    counted = counted_step_flops(model, n)
    lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    if lstms:  # torch's counter has no formula for its LSTM op (torch 2.13); count that part by hand
        weights = sum(p.numel() for m in lstms for name, p in m.named_parameters() if name.startswith("weight_"))
        # each virtual token passes every gate matrix once: forward, input gradient, weight gradient
        counted += 6 * weights * model.active_peft_config.num_virtual_tokens
    quantised = [m for m in model.modules() if type(m).__module__.startswith("bitsandbytes")]
    if quantised:  # torch's counter does not see into bitsandbytes' forward op (dequantise, then matmul)
        counted += 2 * n * sum(m.in_features * m.out_features for m in quantised)
    assert formula == counted


def test_full_fine_tuning_is_six_n_per_token(tiny_model_dir):
    """Every weight trainable (the embedding too, so every matmul's input needs a gradient): 6 N per token."""
    from common.models import load_base_model

    model = load_base_model(str(tiny_model_dir))
    config = model.config
    hidden, layers, vocab = config.hidden_size, config.n_layer, config.vocab_size
    matrices = layers * 12 * hidden**2 + vocab * hidden  # qkv 3, dense 1, MLP 4 + 4 (x hidden^2); tied output
    flops = row_flops(model)
    assert flops.per_token == 6 * matrices
    assert flops.per_pair == 12 * layers * hidden
    assert (flops.prompt_tokens, flops.prefix_tokens, flops.per_virtual) == (0, 0, 0)


@pytest.mark.parametrize("variant", ["lora_qkv", "prompt_random", "prefix"])
def test_formula_on_a_grouped_query_attention_model(variant, other_model_dir):
    """Qwen2 runs attention in torch's fused CPU kernel, which torch's counter does not count (torch 2.13):
    the matmuls must agree exactly, and the formula's attention part is what is left."""
    lesson, flags = VARIANTS[variant]
    model = initial_model(lesson, ["--model_name_or_path", str(other_model_dir("qwen2")), *flags])
    flops, n = row_flops(model), 9
    queries = n + flops.prompt_tokens
    attention = flops.per_pair * queries * (queries + flops.prefix_tokens)
    assert attention > 0
    assert flops.row(n) - attention == counted_step_flops(model, n)
