"""Runs being compared alternate (A B A B ...), so a change in the machine's load reaches each alike; each figure
is the median of the repeats, with the lowest and highest beside it."""

import statistics


def alternated(names: list[str], repeats: int) -> list[str]:
    """The order of the runs: every variant once, then again (A B A B ...), so drift in the machine's load
    reaches every variant alike."""
    return [name for _ in range(repeats) for name in names]


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], fmt: str) -> str:
    """median [lowest-highest]"""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"
