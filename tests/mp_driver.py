"""Run several lessons' train.py `main()` one after another in the processes of one launch (test helper).

torchrun --nproc_per_node 2 tests/mp_driver.py RUNS.json

RUNS.json holds a list of [lesson number, [train.py flags...], kill_at_step or null]. A launch pays the import of
transformers, peft and DeepSpeed once instead of once per lesson; each run is still that lesson's own `main()`.
kill_at_step: every rank kills itself (SIGKILL) when that step ends, like a crash; the launch then fails.
"""

import json
import os
import signal
import sys
import time

from helpers import lesson_module
from transformers import TrainerCallback


class KillAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def run(lesson: str, argv: list[str], kill_at_step: int | None) -> None:
    train = lesson_module(lesson, "train")
    trainer_cls = train.TrainableStateTrainer
    original_init = trainer_cls.__init__

    def init_with_kill(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(KillAtStep(kill_at_step))

    if kill_at_step is not None:
        trainer_cls.__init__ = init_with_kill
    started = time.perf_counter()
    train.main(argv)
    print(f"[driver] lesson {lesson} took {time.perf_counter() - started:.1f} s", file=sys.stderr)


for lesson, argv, kill_at_step in json.loads(open(sys.argv[1], encoding="utf-8").read()):
    run(lesson, argv, kill_at_step)
