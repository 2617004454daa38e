"""The Trainer every lesson uses: checkpoints of the trainable tensors only, resumed exactly; a fixed eval order."""

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset, Sampler
from transformers import Trainer, TrainingArguments

from .distributed import gathered
from .errors import UserError
from .parameters import trainable_parameters, trainable_state

TRAINABLE_STATE = "trainable_state.safetensors"


class TrainableStateTrainer(Trainer):
    """A Trainer whose checkpoints hold only the trainable tensors (plus optimizer, scheduler and RNG state).

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
        # stage3_gather_16bit_weights_on_model_save, save nothing usable); we need only the trainable tensors.
        # Every rank joins the gather; _save writes on rank 0. DeepSpeed's own checkpoint files (optimizer
        # and the partitioned weights, for resuming) are written by the Trainer next to it.
        with gathered(trainable_parameters(self.accelerator.unwrap_model(self.model))):
            self._save(output_dir)

    def _get_eval_sampler(self, eval_dataset: Dataset | None) -> Sampler | None:
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

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        saved = load_file(os.path.join(resume_from_checkpoint, TRAINABLE_STATE))
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(params.keys() - saved.keys()), sorted(saved.keys() - params.keys())
        if missing or unexpected:
            raise UserError(
                f"{resume_from_checkpoint} was made by a different method or settings "
                f"({len(missing)} trainable tensors missing, {len(unexpected)} unexpected, e.g. "
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


def resume_checkpoint(training_args: TrainingArguments) -> str | None:
    """The checkpoint --resume_from_checkpoint names: none, the newest complete one (`true`), or a given folder."""
    value, output_dir = training_args.resume_from_checkpoint, Path(training_args.output_dir)
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
