"""A run's results file: what a finished training run measured, written once, read by every tool.

`write_results` runs after training in every lesson's main() (step 7). It evaluates if asked and writes
`<output_dir>/results.json`: parameter counts, runtime, speed, tokens, peak memory, eval loss and the log
history. compare.py and bench.py read this file (`read_results`); they never parse what a run prints.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .parameters import count_parameters

if TYPE_CHECKING:
    import datasets
    from transformers import Trainer
    from transformers.trainer_utils import TrainOutput

RESULTS_FILE = "results.json"


def write_results(trainer: Trainer, train_result: TrainOutput, eval_dataset: datasets.Dataset | None = None) -> dict:
    """Evaluate if asked, then write the run's figures to results.json (and the Trainer's own all_results.json
    and trainer_state.json) in the output folder. Only the main process writes."""
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
    trainable, total = count_parameters(trainer.model)
    gpu = "peak_gpu_memory_mb" in metrics
    results = {
        "trainable_params": trainable,
        "all_params": total,
        "train_runtime": metrics["train_runtime"],
        "train_samples_per_second": metrics["train_samples_per_second"],
        "train_tokens_per_second": metrics.get("train_tokens_per_second"),
        "num_input_tokens_seen": tokens,
        "train_loss": metrics["train_loss"],
        "peak_memory_mb": metrics["peak_gpu_memory_mb"] if gpu else metrics["peak_rss_mb"],
        "peak_memory_kind": "GPU max allocated" if gpu else "CPU peak RSS",
        "eval_loss": metrics.get("eval_loss"),
        "eval_perplexity": metrics.get("eval_perplexity"),
        "learning_rate": trainer.args.learning_rate,
        "per_device_train_batch_size": trainer.args.per_device_train_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "train_sampling_strategy": str(trainer.args.train_sampling_strategy),
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics, combined=False)
        trainer.state.save_to_json(os.path.join(trainer.args.output_dir, "trainer_state.json"))
        path = Path(trainer.args.output_dir) / RESULTS_FILE
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)  # whole or absent: a reader never sees half a file
    return results


def read_results(output_dir: str | Path) -> dict:
    """The figures a finished run wrote to `<output_dir>/results.json`."""
    path = Path(output_dir) / RESULTS_FILE
    if not path.is_file():
        raise UserError(f"{path}: no results file; the run did not finish")
    return json.loads(path.read_text(encoding="utf-8"))


def loss_curve(results: dict) -> list[tuple[int, float]]:
    """(step, training loss) for every logged step."""
    return [(h["step"], h["loss"]) for h in results["log_history"] if "loss" in h]


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    # ru_maxrss is KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
