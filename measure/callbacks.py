"""TrainerCallbacks that a measured run adds through a lesson's `main(argv, callbacks)`: nothing is patched.

Progress      one line per logged step on stderr: "[tag] step 30/300 loss 1.2345 elapsed 12s"
StepRecorder  when each training batch starts, its real row lengths and its padded size
"""

from __future__ import annotations

import sys
import time

from transformers import TrainerCallback


class Progress(TrainerCallback):
    def __init__(self, tag: str):
        self.tag, self.start = tag, time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            print(f"[{self.tag}] step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                  f"elapsed {time.time() - self.start:.0f}s", file=sys.stderr, flush=True)  # fmt: skip


class StepRecorder(TrainerCallback):
    """Records every training forward pass through a forward pre-hook on the model the Trainer trains.

    `batches`: (time the forward began, real tokens of each row, padded tokens of the batch); `finished`: when
    training ended (after the last optimizer step, before evaluation)."""

    def __init__(self):
        self.batches, self.finished, self._handle = [], None, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if module.training and mask is not None:
            self.batches.append((time.perf_counter(), mask.sum(dim=1).tolist(), mask.numel()))

    def on_train_end(self, args, state, control, **kwargs):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.finished = time.perf_counter()
        self._handle.remove()
