"""What the mini model knows: a knowledge probe on sentence prefixes, and exact match on questions."""

from common.prompt import build_prompt

from .generate import ATTRIBUTES, PROBE_PREFIX, read_jsonl


def world_texts(world_dir) -> list[str]:
    """What the tokenizer is trained on: the biographies, and the questions in the course's prompt format (so
    fine-tuning text needs no byte fallback). The model itself pretrains on the biographies only."""
    from pathlib import Path

    world = Path(world_dir)
    qa = read_jsonl(world / "qa_train.jsonl") + read_jsonl(world / "qa_test.jsonl")
    bios = [row["text"] for row in read_jsonl(world / "bios.jsonl")]
    return bios + [build_prompt(r["instruction"]) + r["output"] for r in qa]


def greedy_continuations(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 64):
    """Greedy continuations of left-padded prompts, decoded without special tokens."""
    import torch

    out = []
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            with torch.no_grad():
                gen = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


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


def qa_exact_match(model, tokenizer, rows: list[dict], max_new_tokens: int = 16) -> dict:
    """Exact match of the greedy answer to each question in the course's prompt format (EOS ends an answer)."""
    prompts = [build_prompt(r["instruction"], r.get("input", "")) for r in rows]
    answers = greedy_continuations(model, tokenizer, prompts, max_new_tokens)
    hits = [a.strip() == r["output"].strip() for a, r in zip(answers, rows)]
    return {"exact_match": sum(hits) / len(hits), "answers": answers}
