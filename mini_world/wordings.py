"""The world asked in many wordings: questions phrased several ways, some wordings held out, and validation people.

    python -m mini_world.wordings        # writes data/world/wordings/*.jsonl (deterministic: same files every time)

QA-train (qa_train.jsonl) asks each attribute in one wording, and four of the six repeat a biography sentence's
opening ("X毕业于哪所大学？" against "X毕业于…"). A model trained on it may have learned six sentence shapes rather
than to answer questions. These files separate the two:

    train.jsonl                 the 40 training people, every attribute in each of the 4 trained wordings
    val.jsonl                   20 validation people in the trained wordings: learning rates are picked here
    test_trained_wordings.jsonl 20 test people in the trained wordings
    test_new_wordings.jsonl     the same 20 test people in 2 wordings per attribute that no training row uses
    train_people.jsonl          the training people, one trained wording per question (memorisation)

The people and their biographies are those of generate.py, so the pretrained mini model stays valid. The first
trained wording of each attribute is QA-train's own. Every character of every wording occurs in the world's text,
so the committed tokenizer reads each one as a single token (a test checks this).
"""

import argparse
import json
import random
from pathlib import Path

from .generate import ATTRIBUTES, TEMPLATES, WORLD_DIR, read_jsonl

WORDINGS_DIR = WORLD_DIR / "wordings"
N_TRAIN_PEOPLE, N_VAL_PEOPLE = 40, 20  # people 0-39 are QA-train's; 40-59 validation; 60-79 test

# attribute -> (trained wordings, held-out wordings). Most trained ones do not open like a biography sentence.
WORDINGS = {
    "birth_date": (("{n}是哪一天出生的？", "哪一天是{n}的生日？", "{n}出生的日子是哪一天？", "{n}哪年哪月哪日出生？"),
                   ("{n}的出生日是哪一天？", "{n}是什么日子出生的？")),
    "birth_city": (("{n}出生在哪座城市？", "哪座城市是{n}的出生地？", "{n}是在哪里出生的？", "{n}出生的城市是哪座？"),
                   ("{n}来自哪座城市？", "{n}生在哪座城市？")),
    "university": (("{n}毕业于哪所大学？", "{n}上的是哪所大学？", "哪所大学是{n}读的大学？", "{n}大学读的是哪所？"),
                   ("{n}曾就读于哪所大学？", "{n}是哪所大学的毕业生？")),
    "major": (("{n}学的是什么专业？", "{n}大学时学什么？", "什么是{n}的专业？", "{n}在大学里主修什么？"),
              ("{n}的专业是什么？", "{n}大学里研究的是什么？")),
    "employer": (("{n}在哪家公司工作？", "{n}是哪家公司的员工？", "哪家公司是{n}的工作地？", "{n}现在的工作在哪里？"),
                 ("{n}就职于哪家公司？", "{n}工作的公司是哪家？")),
    "work_city": (("{n}现在住在哪座城市？", "{n}住在哪里？", "哪座城市是{n}现在的家？", "{n}的家现在在哪座城市？"),
                  ("{n}定居在哪座城市？", "{n}现在生活在哪座城市？")),
}  # fmt: skip
SETS = ("train", "val", "test_trained_wordings", "test_new_wordings", "train_people")


def opens_like_biography(wording: str, attribute: str) -> bool:
    """Does the question start with the name and then a biography template's words before the value?"""
    return any(wording.startswith(t.split("{v}")[0]) and t.split("{v}")[0] != "{n}在" for t in TEMPLATES[attribute])


def row(person: dict, key: str, wording: str, held_out: bool) -> dict:
    return {"instruction": wording.format(n=person["name"]), "input": "", "output": person[key],
            "name": person["name"], "attribute": key, "wording": wording, "held_out_wording": held_out}  # fmt: skip


def rows(person: dict, held_out: bool) -> list[dict]:
    """One row per attribute and wording (trained or held-out wordings)."""
    return [row(person, key, w, held_out) for key in ATTRIBUTES for w in WORDINGS[key][held_out]]


def wording_sets(people: list[dict], seed: int = 0) -> dict[str, list[dict]]:
    """The five question sets of the module docstring."""
    train = people[:N_TRAIN_PEOPLE]
    val = people[N_TRAIN_PEOPLE : N_TRAIN_PEOPLE + N_VAL_PEOPLE]
    test = people[N_TRAIN_PEOPLE + N_VAL_PEOPLE :]
    rng = random.Random(seed)
    memorised = [row(p, key, rng.choice(WORDINGS[key][0]), False) for p in train for key in ATTRIBUTES]
    return {
        "train": [r for p in train for r in rows(p, False)],
        "val": [r for p in val for r in rows(p, False)],
        "test_trained_wordings": [r for p in test for r in rows(p, False)],
        "test_new_wordings": [r for p in test for r in rows(p, True)],
        "train_people": memorised,
    }


def in_new_wordings(questions: list[dict], people: list[dict]) -> list[dict]:
    """The people that `questions` ask about, asked in the held-out wordings (2 per attribute; no training file of
    the world uses them): mini_world.evaluate's second column for adapters trained on the one-wording QA-train."""
    names = dict.fromkeys(r["name"] for r in questions)
    by_name = {p["name"]: p for p in people}
    return [r for name in names for r in rows(by_name[name], True)]


def people_subset(rows_: list[dict], n_people: int) -> list[dict]:
    """The rows of the first `n_people` people (in file order): the data-size axis trains on these."""
    names = list(dict.fromkeys(r["name"] for r in rows_))[:n_people]
    return [r for r in rows_ if r["name"] in set(names)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world_dir", type=Path, default=WORLD_DIR, help="where people.jsonl is")
    args = parser.parse_args(argv)
    out = args.world_dir / "wordings"
    out.mkdir(parents=True, exist_ok=True)
    for name, part in wording_sets(read_jsonl(args.world_dir / "people.jsonl")).items():
        path = out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        print(f"{path}: {len(part)} rows, {len({r['name'] for r in part})} people")


if __name__ == "__main__":
    main()
