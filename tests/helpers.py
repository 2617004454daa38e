"""Test helpers shared by the test modules (which never import each other): the course's tables, the
real-architecture models, one-line error checks, a greedy reference decode."""

import sys
from pathlib import Path

import pytest
import torch

# pytest's pythonpath setting does not reach the scripts tests/ runs in their own processes (mp_driver.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import lessons
from common.course_template import build_prompt
from common.errors import run_cli
from common.lessons import lesson_module
from common.models import REAL_CONFIG

ROOT = lessons.ROOT
# id -> (lesson number, train.py flags): the course's variants, as common.lessons defines them
VARIANTS = {name: (spec.lesson, list(spec.flags)) for name, spec in lessons.VARIANTS.items()}

# The table in the course README, on the real bloom-1b4-zh architecture: variant -> (trainable, all)
COURSE_COUNTS = {
    "bitfit": (544_768, 1_303_111_680),
    "prompt_text": (14_336, 1_303_126_016),
    "prompt_random": (20_480, 1_303_132_160),
    "ptuning_mlp": (12_609_536, 1_315_721_216),
    "ptuning_lstm": (193_030_144, 1_496_141_824),
    "prefix": (983_040, 1_304_094_720),
    "prefix_proj": (205_641_728, 1_508_753_408),
    "lora_qkv": (1_572_864, 1_304_684_544),
    "lora_qkv_dense": (3_538_944, 1_306_650_624),
    "lora_regex_emb": (95_225_856, 1_398_337_536),
    "ia3": (344_064, 1_303_455_744),
    # peft counts a packed 4-bit byte as two weights and an int8 weight as one: lesson 05's count
    "qlora_nf4": (1_572_864, 1_304_684_544),
    "lora_int8": (1_572_864, 1_304_684_544),
}

# One variant per lesson: the ones `make test-fast` trains; variant_params() marks the others slow
FAST_VARIANTS = {
    "01": "bitfit",
    "02": "prompt_random",
    "03": "ptuning_mlp",
    "04": "prefix",
    "05": "lora_qkv",
    "06": "ia3",
    "08": "qlora_nf4",
}


def variant_params(names=None) -> list:
    """pytest parameters for these variants (default: every one), those outside FAST_VARIANTS marked slow."""
    fast = set(FAST_VARIANTS.values())
    return [pytest.param(v, marks=() if v in fast else pytest.mark.slow) for v in names or VARIANTS]


# enough steps on four rows that every variant's loss falls clearly at its lesson's default learning rate
TRAIN_FLAGS = [
    "--max_steps", "200", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
    "--logging_steps", "20", "--logging_first_step", "true", "--save_steps", "100", "--disable_tqdm", "true",
]  # fmt: skip

PROBE = ["今天是星期二，17天后是星期几？", "判断下面这句话的情感是积极还是消极。\n等了一个小时，菜还是凉的。"]


def real_architecture_model(variant: str, tokenizer_dir, extra=()) -> torch.nn.Module:
    """The variant's model as its lesson's `add_method` builds it on the real architecture (meta device)."""
    from transformers import BloomConfig

    from measure.counts import variant_on_meta

    # the real tokenizer splits the hard-prompt text into 7 tokens; the tiny one does not, so say it
    extra = list(extra) + (["--num_virtual_tokens", "7"] if variant == "prompt_text" else [])
    return variant_on_meta(variant, BloomConfig(**REAL_CONFIG), str(tokenizer_dir), None, extra)


def initial_model(lesson: str, argv: list[str]) -> torch.nn.Module:
    """The model exactly as `train.py argv` builds it before training: same seed, same method init."""
    from transformers import set_seed

    from common.models import load_base_model, load_tokenizer
    from common.train_args import parse_train_args

    train = lesson_module(lesson, "train")
    args, training_args = parse_train_args(train.ScriptArguments, argv, train.LESSON_DIR, train.LEARNING_RATE)
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(args.model_name_or_path)
    return train.add_method(load_base_model(args.model_name_or_path, args.dtype), args, tokenizer)


def fails_cleanly(capsys, lesson: str, script: str, argv: list[str], match: str) -> None:
    """The script exits with status 2 and one `error:` line naming the problem; no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(lesson_module(lesson, script).main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2
    assert err[-1].startswith("error: ") and match in err[-1], err
    assert not any("Traceback" in line for line in err)


@torch.no_grad()
def probe_logits(model, tokenizer) -> torch.Tensor:
    """Logits on a fixed left-padded batch: what a reload must reproduce."""
    model.eval()
    tokenizer.padding_side = "left"
    batch = tokenizer([build_prompt(p) for p in PROBE], return_tensors="pt", padding=True, add_special_tokens=False)
    return model(**batch, use_cache=False).logits.float()


def greedy_reference(model, tokenizer, instruction: str, max_new_tokens: int) -> str:
    """Greedy decoding with a full forward pass per token: no KV cache, no generate()."""
    return greedy_reference_for_prompt(model, tokenizer, build_prompt(instruction), max_new_tokens)


def greedy_reference_for_prompt(model, tokenizer, prompt: str, max_new_tokens: int, stop_ids=None) -> str:
    """Greedy decoding of a ready-made prompt (e.g. a conversation with history), one full forward pass per
    token: no KV cache, no generate(). It stops at EOS, or at any of `stop_ids` where given."""
    new = greedy_token_ids(model, tokenizer, prompt, max_new_tokens, stop_ids)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


@torch.no_grad()
def greedy_token_ids(model, tokenizer, prompt: str, max_new_tokens: int, stop_ids=None) -> list[int]:
    """The new token ids of greedy_reference_for_prompt, the stop token included where one was reached."""
    stop = set(stop_ids) if stop_ids is not None else {tokenizer.eos_token_id}
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    new = []
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        token = int(logits[0, -1].argmax())
        new.append(token)
        if token in stop:
            break
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return new


def assert_same_loss_and_gradients(result, tolerance: float) -> None:
    """A hand-made method trains like peft's: same loss, and the same nonzero gradient on every trainable tensor.
    `result` is what `common.check_by_hand.check` returns."""
    from common.check_by_hand import trainable_by_plain_name

    losses = []
    for model in (result.hand, result.reference):
        model.zero_grad()
        loss = model(**result.batch).loss
        loss.backward()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) <= tolerance
    hand, reference = trainable_by_plain_name(result.hand), trainable_by_plain_name(result.reference)
    assert hand.keys() == reference.keys()
    for name, p in hand.items():
        assert p.grad is not None and p.grad.abs().max() > 0, name
        assert (p.grad - reference[name].grad).abs().max().item() <= tolerance, name


def evaluator_rows(lines: list[str]) -> dict[str, list[float]]:
    """{'base': [exact match, ROUGE-L, BLEU-4, LM loss], 'trained': [...]} from mini_world.evaluate's first table;
    'base_columns' and 'trained_columns' ([new people, same people in new wordings, training people], exact match)
    from its second table, where it prints one."""
    rows = {}
    for line in lines:
        words = line.split()
        if words and words[0] in ("base", "trained"):
            key = words[0] if words[0] not in rows else words[0] + "_columns"
            rows[key] = [float(w.rstrip("%")) / (100 if w.endswith("%") else 1) for w in words[1:]]
    return rows
