"""Test helpers: load lesson scripts as modules, the variants of the course, a greedy reference decode."""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.prompt import build_prompt  # noqa: E402, I001
from compare import LESSONS  # noqa: E402, I001
from compare import VARIANTS as COMPARE_VARIANTS  # noqa: E402, I001
from compare import lesson_module as load_lesson_script  # noqa: E402, I001


# id -> (lesson number, train.py flags): the 10 variants of the course, defined once, in compare.py
VARIANTS = {variant: (folder[:2], flags) for variant, (folder, _, flags) in COMPARE_VARIANTS.items()}

# Facts of Langboat/bloom-1b4-zh's config.json
REAL_CONFIG = dict(vocab_size=46145, hidden_size=2048, n_layer=24, n_head=16, tie_word_embeddings=True)

# enough steps on four rows that every variant's loss falls clearly at its lesson's default learning rate
TRAIN_FLAGS = [
    "--max_steps", "200", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
    "--logging_steps", "20", "--logging_first_step", "true", "--save_steps", "100", "--disable_tqdm", "true",
]  # fmt: skip

_cache: dict[tuple[str, str], object] = {}


def lesson_module(lesson: str, name: str):
    """<lesson folder>/<name>.py as a module, imported once per test session."""
    key = (lesson, name)
    if key not in _cache:
        _cache[key] = load_lesson_script(LESSONS[lesson], name)
    return _cache[key]


def greedy_reference(model, tokenizer, instruction: str, max_new_tokens: int) -> str:
    """Greedy decoding with a full forward pass per token: no KV cache, no generate()."""
    return greedy_reference_for_prompt(model, tokenizer, build_prompt(instruction), max_new_tokens)


PROBE = ["今天是星期二，17天后是星期几？", "判断下面这句话的情感是积极还是消极。\n等了一个小时，菜还是凉的。"]


@torch.no_grad()
def probe_logits(model, tokenizer) -> torch.Tensor:
    """Logits on a fixed left-padded batch: what a reload must reproduce."""
    model.eval()
    tokenizer.padding_side = "left"
    batch = tokenizer([build_prompt(p) for p in PROBE], return_tensors="pt", padding=True, add_special_tokens=False)
    return model(**batch, use_cache=False).logits.float()


@torch.no_grad()
def greedy_reference_for_prompt(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding of a ready-made prompt (e.g. a conversation with history), one full forward pass per
    token: no KV cache, no generate()."""
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    new = []
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        token = int(logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokenizer.decode(new, skip_special_tokens=True).strip()
