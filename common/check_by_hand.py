"""The comparison half of every lesson's from_scratch.py (the hand-made half never imports this).

It builds the lesson's model the way train.py does (its own `add_method`), builds the hand-made one on a second
copy of the same base model, lets the lesson copy the values across, then compares counts and logits on a
left-padded batch of two prompts of different length.
"""

import argparse
import contextlib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import HfArgumentParser, PreTrainedTokenizerBase

from .course_template import build_prompt
from .lessons import lesson_module
from .models import load_base_model, load_tokenizer
from .parameters import count_parameters
from .train_args import BaseScriptArguments

TOLERANCE = 1e-5
# a lesson's hand-made method: (base model, the lesson's ScriptArguments, tokenizer) -> the model with it
ByHand = Callable[..., nn.Module]
CopyValues = Callable[[nn.Module, nn.Module], None]  # (hand-made, train.py's model): the same values in both
# two prompts of different length: the shorter row is left-padded, as in batched generation
PROMPTS = ["地球为什么有四季？", "判断下面这句话的情感是积极还是消极。\n等了一个小时，菜还是凉的。"]


@dataclass
class Check:
    hand: nn.Module
    reference: nn.Module  # the peft model train.py builds (BitFit: train.py's own model)
    batch: dict
    hand_count: int
    reference_count: int
    max_diff: float

    @property
    def ok(self) -> bool:
        return self.hand_count == self.reference_count and self.max_diff <= TOLERANCE


def parse_args(lesson_dir: Path, argv: list[str] | None, description: str | None = None) -> BaseScriptArguments:
    """The lesson's own ScriptArguments, so every flag means what it means for train.py.

    The data flags are accepted (a train.py command line can be pasted) but left out of --help: nothing is trained
    (the comparison batch is in the course format).
    """
    parser = HfArgumentParser(
        lesson_module(lesson_dir.name, "train").ScriptArguments,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Exit status 0 when both counts are equal and max |logit difference| <= {TOLERANCE:g}, else 1.",
    )
    for action in parser._actions:
        if action.dest in ("dataset", "eval_dataset", "max_length", "prompt_format"):
            action.help = argparse.SUPPRESS
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def left_padded_batch(tokenizer: PreTrainedTokenizerBase) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "left"
    batch = tokenizer([build_prompt(p) for p in PROMPTS], return_tensors="pt", padding=True, add_special_tokens=False)
    batch = dict(batch)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return batch


def plain_name(name: str) -> str:
    """A parameter name without peft's wrapper and adapter levels: the hand-made model's name for it."""
    return name.removeprefix("base_model.model.").replace(".default.", ".").removesuffix(".default")


def trainable_by_plain_name(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable parameters under the hand-made model's names, so both models' can be compared by name."""
    return {plain_name(n): p for n, p in model.named_parameters() if p.requires_grad}


def build(
    lesson_dir: Path, by_hand: ByHand, copy_values: CopyValues, args: BaseScriptArguments, seed: int = 0
) -> tuple[nn.Module, nn.Module, PreTrainedTokenizerBase]:
    """(hand-made model, train.py's model, tokenizer), holding the same values, both in eval mode."""
    train = lesson_module(lesson_dir.name, "train")
    tokenizer = load_tokenizer(args.model_name_or_path, args.trust_remote_code)
    torch.manual_seed(seed)
    load = (args.model_name_or_path, args.dtype, args.trust_remote_code)
    with contextlib.redirect_stdout(io.StringIO()):  # train.py's progress lines (LoRA's targets) are not the report
        reference = train.add_method(load_base_model(*load), args, tokenizer)
    hand = by_hand(load_base_model(*load), args, tokenizer)
    copy_values(hand, reference)
    return hand.eval(), reference.eval(), tokenizer


def check(lesson_dir: Path, by_hand: ByHand, copy_values: CopyValues, args: BaseScriptArguments) -> Check:
    """Both models built with the same values; their counts and their logits on a left-padded batch."""
    hand, reference, tokenizer = build(lesson_dir, by_hand, copy_values, args)
    batch = left_padded_batch(tokenizer)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        diff = (hand(**inputs).logits - reference(**inputs).logits).abs().max().item()
    return Check(hand, reference, batch, count_parameters(hand)[0], count_parameters(reference)[0], diff)


def trainable_table(model: nn.Module) -> list[str]:
    """Trainable tensors per module, layers folded: `transformer.h.*.mlp.dense_4h_to_h: bias (64,) x 2 = 128`."""
    groups: dict[str, dict] = {}
    for name, p in trainable_by_plain_name(model).items():
        module, _, param = name.rpartition(".")
        layer = re.search(r"\.h\.(\d+)\.", module)
        group = groups.setdefault(re.sub(r"\.h\.\d+\.", ".h.*.", module), {"params": {}, "layers": set(), "n": 0})
        group["params"].setdefault(param, tuple(p.shape))
        group["layers"].add(layer and layer.group(1))
        group["n"] += p.numel()
    lines = []
    for module, g in groups.items():
        what = ", ".join(f"{k} {v}" for k, v in g["params"].items())
        what = what if len(g["params"]) <= 2 else f"{len(g['params'])} tensors"
        if len(g["layers"]) == 1 and None not in g["layers"]:  # one layer: name it
            module = module.replace(".h.*.", f".h.{next(iter(g['layers']))}.")
        times = f" x {len(g['layers'])} layers" if len(g["layers"]) > 1 else ""
        lines.append(f"  {module}: {what}{times} = {g['n']:,d}")
    return lines


def report(result: Check, show: nn.Module | str, notes: Sequence[str] = (), label: str = "peft") -> int:
    """Print the hand-made module, both counts and, last, the logit difference; 0 if they agree."""
    print("hand-made module:")
    print(show)
    print("trainable tensors (hand-made):")
    print("\n".join(trainable_table(result.hand)))
    print(f"trainable params: hand-made {result.hand_count:,d} || {label} {result.reference_count:,d}")
    for note in notes:
        print(note)
    print(f"max |logit difference| vs {label}: {result.max_diff:.3g}")
    return 0 if result.ok else 1
