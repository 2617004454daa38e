"""train.py's command line: the lesson's own flags plus every `TrainingArguments` flag, checked before anything
is loaded or written.

Parsing only parses and checks: starting processes and seeding are steps of each lesson's main(), in view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .distributed import process_defaults
from .errors import DEBUG_EPILOG, UserError, first_line
from .models import DEFAULT_MODEL, DTYPES
from .prompt_format import COURSE, PROMPT_FORMAT_HELP, PROMPT_FORMATS

if TYPE_CHECKING:
    from transformers import TrainingArguments

DEFAULT_DATASET = "shibing624/alpaca-zh"

# The course's effective batch of 8 rows per optimizer step, laid out per device. The Trainer weights the loss
# by tokens, so batching and accumulation give the same update; rows grouped by length waste little on padding.
# Which layout is fastest was measured with `python bench.py --layouts` (docs/speed_and_memory.md): on this
# course's 2-core CPU, 4 rows x 2 accumulation steps (8 x 1 was slower there, and pads more). Not measured on a
# GPU, where a batch of 1 leaves the device mostly idle: all 8 rows go into one batch there.
COURSE_LAYOUT = dict(per_device_train_batch_size=1, gradient_accumulation_steps=8, train_sampling_strategy="random")
CPU_LAYOUT = dict(
    per_device_train_batch_size=4, gradient_accumulation_steps=2, train_sampling_strategy="group_by_length"
)
ACCELERATOR_LAYOUT = dict(
    per_device_train_batch_size=8, gradient_accumulation_steps=1, train_sampling_strategy="group_by_length"
)
LAYOUT_EPILOG = (
    "Batch layout: 8 rows per optimizer step, as the course. Default on a CPU (or with --use_cpu true): "
    "--per_device_train_batch_size 4 --gradient_accumulation_steps 2 --train_sampling_strategy group_by_length; "
    "on a GPU: 8 x 1, group_by_length (measured: docs/speed_and_memory.md). Any of these flags given wins. "
)
EVAL_BATCH = 8  # fixed, whatever the training layout: eval losses depend on the batching


@dataclass
class BaseScriptArguments:
    model_name_or_path: str = field(
        default=DEFAULT_MODEL, metadata={"help": "Base causal LM: a hub id or a local folder."}
    )
    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "A hub dataset id, a save_to_disk folder, or a .json/.jsonl/.parquet file."},
    )
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Optional held-out data in the same formats; evaluated after training."}
    )
    prompt_format: str = field(default=COURSE, metadata={"help": PROMPT_FORMAT_HELP, "choices": list(PROMPT_FORMATS)})
    max_length: int = field(default=256, metadata={"help": "Longest tokenised row; longer rows are cut on the right."})
    dtype: str = field(
        default="float32",
        metadata={"help": "dtype to load the base model in.", "choices": list(DTYPES)},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run code shipped with the model repo. Only for repos you trust."}
    )

    def check(self, training_args: TrainingArguments) -> None:
        """A lesson overrides this to refuse Trainer flags its method cannot work with."""

    @classmethod
    def training_defaults(cls, accelerator: bool) -> dict:
        """A lesson overrides this for Trainer defaults of its own, per device (accelerator or CPU), applied like
        the batch layout: any flag given on the command line wins."""
        return {}


def parse_train_args(
    script_cls: type[BaseScriptArguments], argv: list[str] | None, lesson_dir: Path, learning_rate: float
) -> tuple[BaseScriptArguments, TrainingArguments]:
    """Parse the lesson's script arguments and every `TrainingArguments` flag, and check them.

    One epoch at an effective batch of 8, like the course; each lesson sets its own learning rate and its own
    output folder, so lessons never overwrite each other. The batch of 8 is laid out for the device the run
    trains on (CPU_LAYOUT or ACCELERATOR_LAYOUT); any layout flag given wins.
    """
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((script_cls, TrainingArguments), epilog=LAYOUT_EPILOG + DEBUG_EPILOG)
    parser.set_defaults(**process_defaults())  # torchrun / accelerate launch / deepspeed
    parser.set_defaults(
        output_dir=str(lesson_dir / "output"),
        learning_rate=learning_rate,
        **ACCELERATOR_LAYOUT,
        per_device_eval_batch_size=EVAL_BATCH,
        num_train_epochs=1,
        logging_steps=10,
        save_steps=200,
        save_total_limit=3,
        # pinned memory only speeds up copies to an accelerator; without one torch warns on every DataLoader
        dataloader_pin_memory=_has_torch_accelerator(),
    )
    script_args, training_args = _parse(parser, argv)
    accelerator = default_layout(training_args.use_cpu) is ACCELERATOR_LAYOUT
    method_defaults = script_cls.training_defaults(accelerator)
    if not accelerator or method_defaults:
        # parsed again, so a layout flag (or a flag the method defaults) on the command line still wins
        parser.set_defaults(**({} if accelerator else CPU_LAYOUT), **method_defaults)
        script_args, training_args = _parse(parser, argv)
    check_numbers(script_args, training_args)
    script_args.check(training_args)
    if training_args.include_num_input_tokens_seen == "no":
        training_args.include_num_input_tokens_seen = "non_padding"  # for the tokens/s figure
    out = Path(training_args.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output_dir {out} is a file; pass a folder path")
    return script_args, training_args


def default_layout(use_cpu: bool = False) -> dict:
    """The batch layout train.py uses when no layout flag is given: CPU_LAYOUT or ACCELERATOR_LAYOUT."""
    return CPU_LAYOUT if use_cpu or not _has_torch_accelerator() else ACCELERATOR_LAYOUT


def _parse(parser, argv: list[str] | None):
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except ValueError as exc:  # TrainingArguments checks its flags in __post_init__
        raise UserError(f"invalid training flags: {first_line(exc)}") from exc


def check_numbers(script_args: BaseScriptArguments, training_args: TrainingArguments) -> None:
    """The numbers a user types, refused in one line before anything is loaded (the libraries would fail later,
    with a traceback, or not at all: a learning rate of 0 trains nothing, silently)."""
    at_least_one = {
        "--per_device_train_batch_size": training_args.per_device_train_batch_size,
        "--per_device_eval_batch_size": training_args.per_device_eval_batch_size,
        "--gradient_accumulation_steps": training_args.gradient_accumulation_steps,
    }
    for flag, value in at_least_one.items():
        if value < 1:
            raise UserError(f"{flag} must be 1 or more, not {value}")
    if training_args.max_steps == 0 or training_args.max_steps < -1:
        raise UserError(
            f"--max_steps must be 1 or more (or -1: train for --num_train_epochs), not {training_args.max_steps}"
        )
    if training_args.max_steps == -1 and not training_args.num_train_epochs > 0:
        raise UserError(f"--num_train_epochs must be more than 0, not {training_args.num_train_epochs}")
    if not (math.isfinite(training_args.learning_rate) and training_args.learning_rate > 0):
        raise UserError(f"--learning_rate must be a positive number, not {training_args.learning_rate}")
    if script_args.max_length < 2:
        raise UserError(f"--max_length must be 2 or more, not {script_args.max_length}")


def _has_torch_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6; before it, CUDA was the one torch pinned for
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
