"""The one way the measurement tools run work in a fresh Python process, and read back what it measured.

    run_in_process("measure.lesson_runs:train_runs", spec, log)   # in this process: start, wait, read

The child calls `module:function(spec)` and writes what it returns to a JSON file; the parent reads that file,
never the child's printed text. Everything the child prints goes to the log file (and lines starting with
`echo` to the terminal as well, for progress). A fresh process gives each run its own peak memory and its
own import and load time.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.lessons import ROOT


def run_in_process(target: str, spec: dict, log: Path, echo: str | None = None, threads: int | None = None) -> Any:
    """Call `target` ('module:function') with `spec` in a new Python process; return what it returned.

    `threads`: OMP_NUM_THREADS for the child, unless the environment already sets it."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    result_file = log.with_name(log.stem + ".result.json")
    result_file.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    cmd = [sys.executable, "-m", "measure.process", target, json.dumps(spec), str(result_file)]
    with (
        log.open("w", encoding="utf-8") as out,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc,
    ):
        for line in proc.stdout:
            out.write(line)
            if echo and line.startswith(echo):
                print(line, end="", file=sys.stderr, flush=True)
    if proc.returncode != 0 or not result_file.is_file():
        tail = "".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[-20:])
        raise UserError(f"{target} failed in its own process (exit {proc.returncode}); the end of {log}:\n{tail}")
    return json.loads(result_file.read_text(encoding="utf-8"))


def main(argv: list[str]) -> None:
    """The child: call the function, write its result atomically (whole or absent)."""
    target, spec, result_file = argv
    module, function = target.split(":")
    result = getattr(importlib.import_module(module), function)(json.loads(spec))
    path = Path(result_file)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    main(sys.argv[1:])
