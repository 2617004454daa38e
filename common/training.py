"""Plumbing shared by every lesson's train.py: arguments, model loading, checkpoints, the final save."""

import json
import os
import resource
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from .distributed import gathered, partitioned, process_defaults, setup_processes
from .errors import UserError, first_line

DEFAULT_MODEL = "Langboat/bloom-1b4-zh"
DEFAULT_DATASET = "shibing624/alpaca-zh"
FINAL_SUBDIR = "adapter"  # the finished artifact, next to the Trainer's checkpoint-* folders
TRAINABLE_STATE = "trainable_state.safetensors"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# The course's effective batch of 8 as one batch of 8 rows of similar length instead of 8 steps of one row:
# the same update (the Trainer weights the loss by tokens, so accumulation and batching agree), faster on CPU
# (bench.py measures it), and batches of similar lengths waste little on padding. The course's recipe:
COURSE_LAYOUT = dict(per_device_train_batch_size=1, gradient_accumulation_steps=8, train_sampling_strategy="random")
FAST_LAYOUT = dict(
    per_device_train_batch_size=8,
    gradient_accumulation_steps=1,
    train_sampling_strategy="group_by_length",
    per_device_eval_batch_size=8,  # fixed, whatever the training layout: eval losses depend on the batching
)


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


def parse_train_args(script_cls, argv, lesson_dir: Path, learning_rate: float):
    """Parse the lesson's script arguments and every `TrainingArguments` flag.

    One epoch at an effective batch of 8, like the course; each lesson sets its own learning rate and its own
    output folder, so lessons never overwrite each other. See FAST_LAYOUT for how the batch of 8 is laid out.
    """
    parser = HfArgumentParser(
        (script_cls, TrainingArguments),
        epilog="A bare --debug shows the full traceback of an error (or set PEFT_COURSE_DEBUG=1).",
    )
    parser.set_defaults(**process_defaults())  # torchrun / accelerate launch / deepspeed
    parser.set_defaults(
        output_dir=str(lesson_dir / "output"),
        learning_rate=learning_rate,
        **FAST_LAYOUT,
        num_train_epochs=1,
        logging_steps=10,
        save_steps=200,
        save_total_limit=3,
    )
    try:
        script_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as exc:  # TrainingArguments checks its flags in __post_init__
        raise UserError(f"invalid training flags: {first_line(exc)}") from exc
    script_args.check(training_args)
    if training_args.include_num_input_tokens_seen == "no":
        training_args.include_num_input_tokens_seen = "non_padding"  # for the tokens/s figure
    if script_args.max_length < 2:
        raise UserError("--max_length must be at least 2")
    out = Path(training_args.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output_dir {out} is a file; pass a folder path")
    training_args.resume_from_checkpoint = _resolve_resume(training_args.resume_from_checkpoint, out)
    setup_processes(training_args)
    # seed now, not only in Trainer(): the method's random init (LoRA A, soft prompts, encoders) comes first
    set_seed(training_args.seed)
    return script_args, training_args


def _resolve_resume(value: str | None, output_dir: Path) -> str | None:
    if value is None or value.lower() == "false":
        return None
    if value.lower() == "true":
        # the newest complete checkpoint: the Trainer writes trainer_state.json last, so a run killed while
        # saving leaves a checkpoint without it, or with a half-written one
        complete = [c for c in output_dir.glob("checkpoint-*") if c.name.split("-")[-1].isdigit()
                    and (c / TRAINABLE_STATE).is_file() and _is_json(c / "trainer_state.json")]  # fmt: skip
        if not complete:
            raise UserError(f"--resume_from_checkpoint true: no complete checkpoint-* folder in {output_dir}")
        return str(max(complete, key=lambda c: int(c.name.split("-")[-1])))
    if not (Path(value) / TRAINABLE_STATE).is_file():
        raise UserError(f"--resume_from_checkpoint {value}: not a checkpoint of this course (no {TRAINABLE_STATE})")
    return value


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    _check_local(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load a tokenizer from {name_or_path!r}: {first_line(exc)}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    from .prompt import chat_template

    # the course's prompt format, so every saved tokenizer (adapter/, checkpoints, --merge_to) carries it
    tokenizer.chat_template = chat_template()
    return tokenizer


def load_base_model(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """Load a causal LM, turning the usual mistakes (wrong path, not a causal LM) into one clear line."""
    from transformers import AutoModelForCausalLM

    _check_local(name_or_path)
    if Path(name_or_path).expanduser().is_dir():  # record an absolute path, so infer.py works from anywhere
        name_or_path = str(Path(name_or_path).expanduser().resolve())
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code
        )
    except ValueError as exc:  # transformers raises ValueError for a config with no causal-LM class
        raise UserError(f"{name_or_path} is not a causal language model: {first_line(exc)}") from exc
    except OSError as exc:
        raise UserError(f"could not load the model {name_or_path!r}: {first_line(exc)}") from exc


def _check_local(name: str) -> None:
    """A name that can only be a local path (hub ids look like owner/name) must exist."""
    local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if local and not Path(name).expanduser().is_dir():
        raise UserError(f"model not found: {name} (no such folder)")


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Every parameter that is being trained, by name: what a checkpoint must hold to resume exactly.

    Under ZeRO-3 call it inside `gathered(...)`: outside, each rank holds only an empty placeholder.
    """
    state = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    empty = [name for name, t in state.items() if t.numel() == 0]
    if empty and partitioned(p for p in model.parameters() if p.requires_grad):
        raise RuntimeError(f"{empty[0]} is partitioned by ZeRO-3; read it inside common.distributed.gathered()")
    return state


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


class TrainableStateTrainer(Trainer):
    """A Trainer whose checkpoints hold only the trained tensors (plus optimizer, scheduler and RNG state).

    A plain checkpoint is either the full model (BitFit: 5 GB each on bloom-1b4-zh) or peft's adapter file,
    which for P-tuning and projected prefixes keeps only the final virtual tokens, not the encoder being
    trained, so resuming from it would silently restart the encoder.

    Written against transformers 5.23.0. `_save` and `_load_from_checkpoint` are private Trainer methods: a
    release that renames them or calls them differently makes checkpoints or resuming silently wrong, and then
    tests/test_robustness.py fails (test_resumed_run_equals_uninterrupted_run for loading,
    test_artifacts_and_checkpoints_hold_no_pickled_weights for saving).
    """

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not self.is_deepspeed_enabled:
            return super().save_model(output_dir, _internal_call)
        # The Trainer's DeepSpeed path would gather the whole model (or, under ZeRO-3 without
        # stage3_gather_16bit_weights_on_model_save, save nothing usable); we need only the trained tensors.
        # Every rank joins the gather; _save writes on rank 0. DeepSpeed's own checkpoint files (optimizer
        # and the partitioned weights, for resuming) are written by the Trainer next to it.
        with gathered(trainable_parameters(self.accelerator.unwrap_model(self.model))):
            self._save(output_dir)

    def _get_eval_sampler(self, eval_dataset):
        # the Trainer would length-group eval rows too (train_sampling_strategy group_by_length); its eval loss
        # is a mean of batch means, so only a fixed order makes eval losses comparable between runs
        if self.args.world_size > 1 or eval_dataset is None or not hasattr(eval_dataset, "__len__"):
            return None
        return torch.utils.data.SequentialSampler(eval_dataset)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        tensors = trainable_state(model)
        if state_dict is not None:  # FSDP's full state dict: the gathered weights
            tensors = {k: state_dict[k].cpu().contiguous() for k in tensors if k in state_dict} or tensors
        save_file(tensors, os.path.join(output_dir, TRAINABLE_STATE))
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        saved = load_file(os.path.join(resume_from_checkpoint, TRAINABLE_STATE))
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(params.keys() - saved.keys()), sorted(saved.keys() - params.keys())
        if missing or unexpected:
            raise UserError(
                f"{resume_from_checkpoint} was made by a different method or settings "
                f"({len(missing)} trained tensors missing, {len(unexpected)} unexpected, e.g. "
                f"{(missing + unexpected)[0]}); resume with the flags of the original run"
            )
        with torch.no_grad():
            for name, p in params.items():
                if p.shape != saved[name].shape:
                    raise UserError(
                        f"{resume_from_checkpoint}: {name} has shape {tuple(saved[name].shape)}, "
                        f"this run expects {tuple(p.shape)}; resume with the flags of the original run"
                    )
                p.copy_(saved[name])


def finish_training(trainer: Trainer, train_result, eval_dataset=None) -> dict:
    """Evaluate if asked, and save metrics (loss, speed, peak memory) and the log next to the checkpoints."""
    metrics = dict(train_result.metrics)
    tokens = trainer.state.num_input_tokens_seen
    if tokens and metrics.get("train_runtime"):
        metrics["train_tokens_per_second"] = round(tokens / metrics["train_runtime"], 3)
    if torch.cuda.is_available():
        metrics["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    metrics["peak_rss_mb"] = round(rss, 1)
    if eval_dataset is not None:
        eval_metrics = trainer.evaluate(eval_dataset)
        eval_metrics["eval_perplexity"] = float(torch.exp(torch.tensor(eval_metrics["eval_loss"])))
        metrics.update(eval_metrics)
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics, combined=False)
        trainer.state.save_to_json(os.path.join(trainer.args.output_dir, "trainer_state.json"))
    return metrics


def save_final(trainer: Trainer, write) -> Path | None:
    """Write the finished artifact atomically: into a temporary folder beside it, then rename.

    A crash mid-save leaves the previous artifact (or none), never a half-written one. Only rank 0 writes it.
    Under ZeRO-3 every rank first gathers the trained tensors, and every rank runs `write`: saving a prompt
    encoder's output runs the encoder, and each step of a partitioned module is a collective one. The other
    ranks write into a scratch folder that is deleted at once.
    """
    params = trainable_parameters(trainer.accelerator.unwrap_model(trainer.model))
    with gathered(params):
        if not trainer.is_world_process_zero():
            if partitioned(params):
                with tempfile.TemporaryDirectory() as scratch:
                    write(Path(scratch))
            return None
        final = Path(trainer.args.output_dir) / FINAL_SUBDIR
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
    _refuse_empty_tensors(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    print(f"saved to {final}", file=sys.stderr)
    return final


def _refuse_empty_tensors(folder: Path) -> None:
    """A zero-size tensor in the artifact means a partitioned (ZeRO-3) parameter was saved ungathered:
    fail loudly rather than replace a good artifact with an empty one. Reads only the files' headers."""
    from safetensors import safe_open

    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as tensors:
            empty = [name for name in tensors.keys() if 0 in tensors.get_slice(name).get_shape()]
        if empty:
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"{file.name}: {empty[0]} has no elements; the artifact was not saved")
