"""After training: evaluate if asked, and write the run's figures (loss, speed, peak memory) and its log."""

from __future__ import annotations

import os
import resource
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets
    from transformers import Trainer
    from transformers.trainer_utils import TrainOutput


def finish_training(
    trainer: Trainer, train_result: TrainOutput, eval_dataset: datasets.Dataset | None = None
) -> dict[str, float]:
    """Evaluate if asked, and save metrics (loss, speed, peak memory) and the log next to the checkpoints."""
    import torch

    metrics = dict(train_result.metrics)
    tokens = trainer.state.num_input_tokens_seen
    if tokens and metrics.get("train_runtime"):
        metrics["train_tokens_per_second"] = round(tokens / metrics["train_runtime"], 3)
    if torch.cuda.is_available():
        metrics["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if eval_dataset is not None:
        eval_metrics = trainer.evaluate(eval_dataset)
        eval_metrics["eval_perplexity"] = float(torch.exp(torch.tensor(eval_metrics["eval_loss"])))
        metrics.update(eval_metrics)
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics, combined=False)
        trainer.state.save_to_json(os.path.join(trainer.args.output_dir, "trainer_state.json"))
    return metrics


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    # ru_maxrss is KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
