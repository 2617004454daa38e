"""Run several lessons' train.py `main()` one after another in the processes of one launch.

torchrun --nproc_per_node 2 tests/mp_driver.py RUNS.json

RUNS.json holds a list of [lesson folder, [train.py flags...]]. Each launch pays the import of transformers, peft
and DeepSpeed once instead of once per lesson; every run is still the lesson's own, unchanged `main()`.
"""

import json
import sys

from helpers import lesson_module

for lesson, argv in json.loads(open(sys.argv[1], encoding="utf-8").read()):
    lesson_module(lesson[:2], "train").main(argv)
