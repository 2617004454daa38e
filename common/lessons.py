"""The course's lessons and variants, in one place, and the one loader of a lesson's scripts.

compare.py, bench.py, check_by_hand, the chat code and the tests all read these tables; a new variant is one
line in VARIANTS.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]

# lesson number -> folder, in course order
LESSONS = {
    "01": "01-chatbot_bitfit",
    "02": "02-chatbot_prompt_tuning",
    "03": "03-chatbot_p_tuning",
    "04": "04-chatbot_prefix_tuning",
    "05": "05-chatbot_lora",
}

# Lessons that teach no method of their own and so have no train.py or variants: they use the methods above
# (07: several lesson-05 LoRA adapters on one base). Only lesson_module reads this table.
TOPIC_LESSONS = {
    "07": "07-chatbot_adapters",
}

# What each lesson saves (peft's `peft_type`, or BitFit's own), so an adapter given to the wrong infer.py can say
# which lesson made it.
LESSON_OF_METHOD = {
    "BITFIT": "01",
    "PROMPT_TUNING": "02",
    "P_TUNING": "03",
    "PREFIX_TUNING": "04",
    "LORA": "05",
}


class Variant(NamedTuple):
    lesson: str  # a key of LESSONS
    label: str
    flags: tuple[str, ...]  # passed to the lesson's train.py

    @property
    def folder(self) -> str:
        return LESSONS[self.lesson]


# Both prompt-tuning variants train continuous embeddings, so the labels name the initialisation (lesson 02
# explains the old hard/soft names).
VARIANTS = {
    "bitfit": Variant("01", "BitFit (every bias)", ()),
    "prompt_text": Variant("02", "prompt tuning, text init", ("--prompt_init", "text")),
    "prompt_random": Variant("02", "prompt tuning, random init (10 tokens)", ("--prompt_init", "random")),
    "ptuning_mlp": Variant("03", "P-tuning, MLP encoder", ("--encoder_type", "mlp")),
    "ptuning_lstm": Variant("03", "P-tuning, LSTM encoder", ("--encoder_type", "lstm")),
    "prefix": Variant("04", "prefix tuning, no projection", ("--prefix_projection", "false")),
    "prefix_proj": Variant("04", "prefix tuning, projection", ("--prefix_projection", "true")),
    "lora_qkv": Variant("05", "LoRA r=8, query_key_value", ()),
    "lora_qkv_dense": Variant("05", "LoRA, + dense_4h_to_h", ("--target_modules", "query_key_value", "dense_4h_to_h")),
    "lora_regex_emb": Variant(
        "05",
        "LoRA, regex + modules_to_save embeddings",
        ("--target_modules", r".*\.1.*query_key_value", "--modules_to_save", "word_embeddings"),
    ),
}


def lesson_number(lesson: str) -> str:
    """'05' for '05' or '05-chatbot_lora'; a clear error for anything else."""
    every = {**LESSONS, **TOPIC_LESSONS}
    if lesson in every:
        return lesson
    if every.get(lesson[:2]) == lesson:
        return lesson[:2]
    raise KeyError(f"no lesson {lesson!r}; the lessons are {', '.join(every.values())}")


def lesson_module(lesson: str, name: str) -> ModuleType:
    """`<lesson folder>/<name>.py` (train, infer, from_scratch) as a module, loaded once per process.

    `lesson` is a number ('05') or a folder name. Each module gets its own name, so lessons never shadow each
    other; it is registered before it runs, as an import would, so its dataclasses can find their module.
    """
    folder = {**LESSONS, **TOPIC_LESSONS}[lesson_number(lesson)]
    module_name = f"lesson{folder[:2]}_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return sys.modules[module_name]
