"""User-facing errors: one clear line, no traceback, unless the user asks for it."""

import os
import sys
from collections.abc import Callable

DEBUG_ENV = "PEFT_COURSE_DEBUG"
DEBUG_EPILOG = f"A bare --debug shows the full traceback of an error (or set {DEBUG_ENV}=1)."


class UserError(Exception):
    """A problem with the user's input that the user can fix; shown as one line."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run a script's `main`, turning a `UserError` into `error: ...` and exit status 2.

    A bare `--debug`, or PEFT_COURSE_DEBUG=1, shows the full traceback instead. (`--debug OPTION`, with a
    value, is left to TrainingArguments, which has a flag of that name.)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    for i, arg in enumerate(argv):
        if arg == "--debug" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            del argv[i]
            debug = True
            break
    try:
        main(argv)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if debug:
            raise
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
