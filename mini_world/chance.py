"""The chance level of exact match: what a model that learned only the answer format would score.

    python -m mini_world.chance

Such a model knows no fact about a new person, so the best it can do is guess from the training people's answers.
Two guessers, each scored per attribute on people it was never trained on, then averaged over all questions:

    frequency   picks each value with the probability it has among the training people (expected exact match)
    most common always answers the training people's most common value

Both are printed for the two test groups the course uses: QA-test's 40 people (the lesson demos) and the 20 test
people of the wordings split (the experiment), and from two sources of answers: the 40 training people (what
fine-tuning showed) and all 80 people (what pretraining read, test people included: a higher bar). Birth dates are
almost never shared, so they score about zero.
"""

import argparse
from collections import Counter

from .generate import ATTRIBUTES, WORLD_DIR, read_jsonl
from .wordings import N_TRAIN_PEOPLE, N_VAL_PEOPLE


def chance_levels(train: list[dict], test: list[dict]) -> dict[str, float]:
    """Expected exact match of the two guessers on `test`, from the answers of `train` (fractions)."""
    frequency = most_common = 0.0
    for key in ATTRIBUTES:
        counts = Counter(person[key] for person in train)
        top = counts.most_common(1)[0][0]
        for person in test:
            frequency += counts[person[key]] / len(train)
            most_common += person[key] == top
    questions = len(ATTRIBUTES) * len(test)
    return {"frequency": frequency / questions, "most_common": most_common / questions}


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    people = read_jsonl(WORLD_DIR / "people.jsonl")
    train = people[:N_TRAIN_PEOPLE]
    groups = {"QA-test (40 people, lesson demos)": people[N_TRAIN_PEOPLE:],
              "wordings test (20 people, experiment)": people[N_TRAIN_PEOPLE + N_VAL_PEOPLE:]}  # fmt: skip
    for source, answers in ((f"the {len(train)} training people", train), (f"all {len(people)} people", people)):
        print(f"chance exact match, guessing from the answers of {source}")
        for name, test in groups.items():
            levels = chance_levels(answers, test)
            print(f"  {name}: frequency {levels['frequency']:.1%}, most common {levels['most_common']:.1%}")


if __name__ == "__main__":
    main()
