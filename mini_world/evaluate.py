"""Score a trained adapter on the mini world's held-out people: base model vs adapter, side by side.

    python -m mini_world.evaluate --adapter 05-chatbot_lora/output

The adapter answers through its own lesson's infer.py (`load_for_inference`, then the batched greedy
`generate_from_prompts` that `infer.py --input_file` runs); the bare base model answers the same prompts; both are
scored by measure.scoring, the scorer compare.py uses.
The questions are about people whose biographies the base model read in pretraining but who never appeared in a
question during fine-tuning, so a correct answer means fine-tuning unlocked knowledge that pretraining stored.
With the default questions (QA-test, one wording per attribute, as in QA-train), a second table gives exact match
on the same people asked in the 12 wordings no training file uses, and on the training people: how much of what
was learned is tied to the trained wording, and how much is memorised.
"""

import argparse
import json
from pathlib import Path

from common.errors import UserError, run_cli
from common.lessons import LESSON_OF_METHOD, LESSONS, ROOT, lesson_module

from .generate import WORLD_DIR, read_jsonl
from .probe import ANSWER_TOKENS


def lesson_infer(folder: Path):
    """The infer.py module of the lesson that saved `folder`, and that lesson's folder name."""
    from common.artifacts import artifact_method

    method = artifact_method(folder) if folder.is_dir() else None
    if method not in LESSON_OF_METHOD:
        raise UserError(f"no trained adapter in {folder}; train one with a lesson's train.py first")
    lesson = LESSON_OF_METHOD[method]
    return lesson_module(lesson, "infer"), LESSONS[lesson]


def load_adapter(adapter: str):
    """(lesson folder name, adapter folder, model, tokenizer, base model) for a lesson's output or adapter/ folder."""
    from common.artifacts import artifact_base, resolve_adapter
    from common.models import load_base_model

    folder = Path(adapter)
    folder = folder / "adapter" if (folder / "adapter").is_dir() else folder
    infer, lesson = lesson_infer(folder)
    folder = resolve_adapter(str(folder), ROOT / lesson, infer.METHOD)
    model, tokenizer = infer.load_for_inference(str(folder))
    return lesson, folder, model, tokenizer, load_base_model(artifact_base(folder)).eval()


QA_TEST, QA_TRAIN = WORLD_DIR / "qa_test.jsonl", WORLD_DIR / "qa_train.jsonl"
# the columns next to QA-test's when the questions are QA-test's: the same people asked in other wordings, and the
# training people in the trained wording (what one wording per attribute teaches, and what is memorised)
EXTRA_COLUMNS = {"new_wordings": "same people, new wordings", "train_people": "training people"}


def extra_question_sets(questions: list[dict]) -> dict[str, list[dict]]:
    from .wordings import in_new_wordings

    people = read_jsonl(WORLD_DIR / "people.jsonl")
    return {"new_wordings": in_new_wordings(questions, people), "train_people": read_jsonl(QA_TRAIN)}


def evaluate(
    adapter: str,
    questions: str = str(QA_TEST),
    held_out_bios: str = str(WORLD_DIR / "bios_held_out.jsonl"),
    batch_size: int = 64,
    max_new_tokens: int = ANSWER_TOKENS,
) -> dict:
    from measure.scoring import score_model

    lesson, folder, model, tokenizer, base = load_adapter(adapter)
    rows = read_jsonl(Path(questions))
    bios = [r["text"] for r in read_jsonl(Path(held_out_bios))]
    result = {"lesson": lesson, "adapter": str(folder), "questions": len(rows),
              "people": len({r.get("name", r["instruction"]) for r in rows})}  # fmt: skip
    extra = extra_question_sets(rows) if Path(questions).resolve() == QA_TEST.resolve() else {}
    for side, m in (("base", base), ("trained", model)):  # the one scorer compare.py uses too
        scored = score_model(m, tokenizer, rows, bios, batch_size, max_new_tokens)
        result[side + "_answers"] = scored.pop("answers")
        result[side] = scored
        for name, extra_rows in extra.items():
            result[side][name] = score_model(m, tokenizer, extra_rows, None, batch_size, max_new_tokens)["exact_match"]
    result["extra_questions"] = {name: len(extra_rows) for name, extra_rows in extra.items()}
    result["forgetting"] = result["trained"]["lm_loss"] - result["base"]["lm_loss"]
    return result


def evaluate_wordings(adapter: str, held_out_bios: str) -> dict:
    """Base model and adapter on the question sets of mini_world.wordings (experiment.py's scoring)."""
    from measure.experiment import score_all

    from .wordings import WORDINGS_DIR

    lesson, folder, model, tokenizer, base = load_adapter(adapter)
    return {"lesson": lesson, "adapter": str(folder), "base": score_all(base, tokenizer, held_out_bios, WORDINGS_DIR),
            "trained": score_all(model, tokenizer, held_out_bios, WORDINGS_DIR)}  # fmt: skip


def wordings_report(result: dict) -> str:
    from measure.experiment_report import COLUMNS

    lines = ["exact match" + "".join(f"{title:>30}" for title in COLUMNS.values())]
    for side in ("base", "trained"):
        lines.append(f"{side:11}" + "".join(f"{result[side]['scores'][c]['exact_match']:>30.1%}" for c in COLUMNS))
    forgetting = result["trained"]["lm_loss"] - result["base"]["lm_loss"]
    lines.append(f"forgetting (LM loss on held-out biographies, trained - base): {forgetting:+.3f}")
    return "\n".join(lines)


def report(result: dict, rows: list[dict], examples: int) -> str:
    lines = [
        f"{result['questions']} questions about {result['people']} people never seen in question form",
        f"{'':10}{'exact match':>12}{'ROUGE-L':>9}{'BLEU-4':>8}{'LM loss':>9}",
    ]
    for side in ("base", "trained"):
        s = result[side]
        lines.append(f"{side:10}{s['exact_match']:>12.1%}{s['rouge_l']:>9.1%}{s['bleu4']:>8.1%}{s['lm_loss']:>9.3f}")
    lines.append(f"forgetting (LM loss on held-out biographies, trained - base): {result['forgetting']:+.3f}")
    if result["extra_questions"]:
        n = result["extra_questions"]
        titles = EXTRA_COLUMNS["new_wordings"], EXTRA_COLUMNS["train_people"]
        lines.append(f"exact match{'new people':>14}{titles[0]:>28}{titles[1]:>17}")
        lines.append(f"{'(questions)':11}{result['questions']:>14}{n['new_wordings']:>28}{n['train_people']:>17}")
        for side in ("base", "trained"):
            s = result[side]
            lines.append(f"{side:11}{s['exact_match']:>14.1%}{s['new_wordings']:>28.1%}{s['train_people']:>17.1%}")
    step = max(1, len(rows) // max(1, examples))
    for i in [k * step + k for k in range(examples) if k * step + k < len(rows)]:  # k: vary the attribute
        lines.append(f"Q: {rows[i]['instruction']}  expected: {rows[i]['output']}")
        lines.append(f"   base: {result['base_answers'][i]!r}  trained: {result['trained_answers'][i]!r}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="a lesson's output folder or its adapter/ folder")
    parser.add_argument(
        "--questions",
        default=str(QA_TEST),
        help="question file (default: QA-test's 40 people; with it, also exact match on the same "
        "people asked in the 12 wordings no training file uses, and on the 40 training people)",
    )
    parser.add_argument("--held_out_bios", default=str(WORLD_DIR / "bios_held_out.jsonl"))
    parser.add_argument("--max_new_tokens", type=int, default=ANSWER_TOKENS,
                        help="longest answer in tokens; lesson 07's full-sentence answers need 24")  # fmt: skip
    parser.add_argument("--examples", type=int, default=4, help="questions to show with both answers")
    parser.add_argument("--json", help="also write the full result (all answers) to this file")
    parser.add_argument("--wordings", action="store_true",
                        help="score on data/world/wordings instead (new people in trained and in new wordings, "
                        "and the training people: experiment.py's three columns); for adapters trained on its "
                        "train.jsonl")  # fmt: skip
    args = parser.parse_args(argv)
    for path in (args.questions, args.held_out_bios):
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file (python -m mini_world.generate writes the world)")
    if args.wordings:
        result = evaluate_wordings(args.adapter, args.held_out_bios)
        print(wordings_report(result))
    else:
        result = evaluate(args.adapter, args.questions, args.held_out_bios, max_new_tokens=args.max_new_tokens)
        print(report(result, read_jsonl(Path(args.questions)), args.examples))
    if args.json:
        Path(args.json).write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    return result


if __name__ == "__main__":
    run_cli(main)
