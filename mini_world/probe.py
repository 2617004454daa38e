"""What the mini model knows: a knowledge probe on sentence prefixes, and exact match on questions."""

from common.course_template import build_prompt

from .generate import ATTRIBUTES, PROBE_PREFIX, read_jsonl


def world_texts(world_dir) -> list[str]:
    """What the tokenizer is trained on: the biographies, and the questions in the course's prompt format (so
    fine-tuning text needs no byte fallback). The model itself pretrains on the biographies only."""
    from pathlib import Path

    world = Path(world_dir)
    qa = read_jsonl(world / "qa_train.jsonl") + read_jsonl(world / "qa_test.jsonl")
    bios = [row["text"] for row in read_jsonl(world / "bios.jsonl")]
    return bios + [build_prompt(r["instruction"]) + r["output"] for r in qa]


ANSWER_TOKENS = 16  # the longest answer (a date) is 11 tokens


def greedy_continuations(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 64):
    """Greedy continuations of prompts, in left-padded batches, by infer.py's own `generate_from_prompts`."""
    from common.generation import generate_from_prompts

    gen = {"max_new_tokens": max_new_tokens, "do_sample": False,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    out = []
    for start in range(0, len(prompts), batch_size):
        out += generate_from_prompts(model, tokenizer, prompts[start : start + batch_size], gen)
    return out


def answer_questions(
    model, tokenizer, rows: list[dict], batch_size: int = 64, max_new_tokens: int = ANSWER_TOKENS
) -> list[str]:
    """Greedy answers to instruction/input rows in the course's prompt format (EOS ends an answer)."""
    prompts = [build_prompt(r["instruction"], r.get("input", "")) for r in rows]
    return greedy_continuations(model, tokenizer, prompts, max_new_tokens, batch_size)


def knowledge_probe(model, tokenizer, people: list[dict]) -> dict:
    """For every person and attribute: does the greedy continuation of e.g. "王安宁毕业于" start with the value
    followed by the sentence's full stop?"""
    prompts, targets, keys = [], [], []
    for person in people:
        for key in ATTRIBUTES:
            prompts.append(PROBE_PREFIX[key].format(n=person["name"]))
            targets.append(person[key] + "。")
            keys.append(key)
    longest = max(len(tokenizer(t)["input_ids"]) for t in targets)
    answers = greedy_continuations(model, tokenizer, prompts, longest)
    hits = [a.startswith(t) for a, t in zip(answers, targets)]
    by_key = {k: sum(h for h, kk in zip(hits, keys) if kk == k) / keys.count(k) for k in ATTRIBUTES}
    return {"accuracy": sum(hits) / len(hits), "by_attribute": by_key, "answers": answers}


def qa_exact_match(model, tokenizer, rows: list[dict]) -> dict:
    """Exact match of the greedy answer to each question, after stripping."""
    from measure.scoring import exact_match

    answers = answer_questions(model, tokenizer, rows)
    return {"exact_match": sum(map(exact_match, answers, [r["output"] for r in rows])) / len(rows), "answers": answers}
