"""A second task on the same world, for lesson 07: the same questions, answered as a full sentence.

    python -m mini_world.tasks        # writes data/world/qa_{train,test}_sentence.jsonl from qa_{train,test}.jsonl

QA-train teaches the short answer ("吉林大学"); these files teach the same questions answered with the sentence a
biography would use ("程浩宁毕业于吉林大学。", the first template of each attribute). Two LoRA adapters trained on
the two files answer one question visibly differently, so a batch that mixes them shows which row went where.
The people, the split and the questions are those of qa_train.jsonl and qa_test.jsonl; only `output` changes.
"""

import argparse
from pathlib import Path

from .generate import TEMPLATES, WORLD_DIR, read_jsonl

SUFFIX = "_sentence"


def as_sentence(row: dict) -> dict:
    """The row with its answer written as the attribute's first biography sentence."""
    return {**row, "output": TEMPLATES[row["attribute"]][0].format(n=row["name"], v=row["output"])}


def sentence_task(world_dir: Path = WORLD_DIR) -> dict[str, list[dict]]:
    """file stem -> rows: qa_train_sentence and qa_test_sentence."""
    return {f"{part}{SUFFIX}": [as_sentence(r) for r in read_jsonl(world_dir / f"{part}.jsonl")]
            for part in ("qa_train", "qa_test")}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world_dir", type=Path, default=WORLD_DIR, help="where qa_train.jsonl and qa_test.jsonl are")
    args = parser.parse_args(argv)
    import json

    for name, rows in sentence_task(args.world_dir).items():
        path = args.world_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} rows")


if __name__ == "__main__":
    main()
