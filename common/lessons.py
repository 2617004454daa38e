"""The course's lessons, in one registry: their folders, what their artifacts are called, their variants; what
each lesson's scripts must define (the contract); and the one loader of a lesson's scripts.

A new lesson is a folder plus one entry in REGISTRY. tests/test_house.py checks every lesson against CONTRACT
and names what is missing. compare.py, bench.py, check_by_hand, the chat code and the tests read these tables.
"""

import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Lesson(NamedTuple):
    number: str  # "05"
    folder: str  # "05-chatbot_lora"
    # what its saved artifact calls the method: peft's `peft_type`, or its own method record's; None for a topic
    # lesson, which teaches no method of its own (no train.py, no variants) and works with another lesson's adapters
    method: str | None
    # variant id -> (label, train.py flags): the switches the lesson teaches, compared side by side
    variants: dict[str, tuple[str, tuple[str, ...]]]


# Both prompt-tuning variants train continuous embeddings, so the labels name the initialisation (lesson 02
# explains the old hard/soft names).
REGISTRY = (
    Lesson("01", "01-chatbot_bitfit", "BITFIT", {"bitfit": ("BitFit (every bias)", ())}),
    Lesson("02", "02-chatbot_prompt_tuning", "PROMPT_TUNING", {
        "prompt_text": ("prompt tuning, text init", ("--prompt_init", "text")),
        "prompt_random": ("prompt tuning, random init (10 tokens)", ("--prompt_init", "random")),
    }),
    Lesson("03", "03-chatbot_p_tuning", "P_TUNING", {
        "ptuning_mlp": ("P-tuning, MLP encoder", ("--encoder_type", "mlp")),
        "ptuning_lstm": ("P-tuning, LSTM encoder", ("--encoder_type", "lstm")),
    }),
    Lesson("04", "04-chatbot_prefix_tuning", "PREFIX_TUNING", {
        "prefix": ("prefix tuning, no projection", ("--prefix_projection", "false")),
        "prefix_proj": ("prefix tuning, projection", ("--prefix_projection", "true")),
    }),
    Lesson("05", "05-chatbot_lora", "LORA", {
        "lora_qkv": ("LoRA r=8, query_key_value", ()),
        "lora_qkv_dense": ("LoRA, + dense_4h_to_h", ("--target_modules", "query_key_value", "dense_4h_to_h")),
        "lora_regex_emb": ("LoRA, regex + modules_to_save embeddings",
                           ("--target_modules", r".*\.1.*query_key_value", "--modules_to_save", "word_embeddings")),
    }),
    Lesson("06", "06-chatbot_ia3", "IA3", {"ia3": ("IA3, peft's default layers", ())}),
    Lesson("07", "07-chatbot_adapters", None, {}),  # several lesson-05 LoRA adapters on one base
    # peft saves a QLoRA adapter as plain LORA: lesson 08 records its own method (and the quantisation) in method.json
    Lesson("08", "08-chatbot_qlora", "QLORA", {
        "qlora_nf4": ("QLoRA r=8: NF4 base, double quantisation", ()),
        "lora_int8": ("LoRA r=8 on an int8 base", ("--quantization", "int8")),
    }),
)  # fmt: skip

# method lesson number -> folder, in course order: the lessons that train, count and compare
LESSONS = {lesson.number: lesson.folder for lesson in REGISTRY if lesson.method}
# lessons that teach no method of their own (lesson_module loads their scripts too)
TOPIC_LESSONS = {lesson.number: lesson.folder for lesson in REGISTRY if not lesson.method}
# what each lesson saves, so an adapter given to the wrong infer.py can say which lesson made it
LESSON_OF_METHOD = {lesson.method: lesson.number for lesson in REGISTRY if lesson.method}


class Variant(NamedTuple):
    lesson: str  # a key of LESSONS
    label: str
    flags: tuple[str, ...]  # passed to the lesson's train.py

    @property
    def folder(self) -> str:
        return LESSONS[self.lesson]


VARIANTS = {
    variant: Variant(lesson.number, label, flags)
    for lesson in REGISTRY
    for variant, (label, flags) in lesson.variants.items()
}

# What every lesson's scripts define: script -> {name: (parameters it takes, or None for a value), what it is}.
# Tools reach a lesson only through these names, so a lesson that keeps them works with all of them.
CONTRACT = {
    "train": {
        "LESSON_DIR": (None, "the lesson's folder (its output/ goes there)"),
        "LEARNING_RATE": (None, "the lesson's default learning rate"),
        "ScriptArguments": (None, "the command line: common.train_args.BaseScriptArguments + the method's knobs"),
        "add_method": (("model", "args", "tokenizer"), "step 5: the base model with the method added"),
        "save_method": (("model", "tokenizer", "folder"), "step 8: write the trained artifact into folder"),
        "main": (("argv", "callbacks"), "the lesson, steps 1-8; returns the Trainer"),
    },
    "infer": {
        "METHOD": (None, "the method its artifacts record (this lesson's REGISTRY entry)"),
        "load_for_inference": (
            ("adapter", "model_name_or_path", "dtype", "trust_remote_code"),
            "(model, tokenizer) ready to generate",
        ),
        "main": (("argv",), "every chat mode and --merge_to"),
    },
    "from_scratch": {
        "by_hand": (("model", "args", "tokenizer"), "the method in plain torch on a base model"),
        "copy_values": (("hand", "reference"), "the reference model's trained values, copied into the hand-made one"),
        "main": (("argv",), "build both, compare counts and logits; exit status 0 when equal"),
    },
}
# a topic lesson: its own infer.py and from_scratch.py, each a command line
TOPIC_CONTRACT = {
    "infer": {"main": (("argv",), "the lesson's command line")},
    "from_scratch": {"main": (("argv",), "the lesson's idea in plain torch, checked against peft")},
}  # fmt: skip


def lesson_number(lesson: str) -> str:
    """'05' for '05' or '05-chatbot_lora'; a clear error for anything else."""
    every = {**LESSONS, **TOPIC_LESSONS}
    if lesson in every:
        return lesson
    if every.get(lesson[:2]) == lesson:
        return lesson[:2]
    raise KeyError(f"no lesson {lesson!r}; the lessons are {', '.join(every.values())}")


def lesson_module(lesson: str, name: str) -> ModuleType:
    """`<lesson folder>/<name>.py` (train, infer, from_scratch, or a module of the lesson's own) as a module,
    loaded once per process.

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


def contract_gaps(lesson: str) -> list[str]:
    """What the lesson's scripts lack of its contract (CONTRACT, or TOPIC_CONTRACT for a topic lesson), one line
    each: empty when it keeps it."""
    number, gaps = lesson_number(lesson), []
    folder = LESSONS.get(number) or TOPIC_LESSONS[number]
    for script, parts in (CONTRACT if number in LESSONS else TOPIC_CONTRACT).items():
        if not (ROOT / folder / f"{script}.py").is_file():
            gaps.append(f"{script}.py is missing")
            continue
        module = lesson_module(lesson, script)
        for name, (params, what) in parts.items():
            if not hasattr(module, name):
                gaps.append(f"{script}.py does not define {name}: {what}")
            elif params is not None:
                found = tuple(inspect.signature(getattr(module, name)).parameters)
                if found[: len(params)] != params:
                    gaps.append(f"{script}.py: {name}{found} should take {params}: {what}")
    return gaps
