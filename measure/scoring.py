"""The one scorer: a model's greedy answers to questions, scored by answer-level metrics for Chinese (exact
match, character ROUGE-L F1, character BLEU-4), and forgetting. compare.py and mini_world.evaluate both use it.

Chinese has no spaces, so the overlap metrics count characters (after stripping whitespace at both ends):
every character is one token, as `list(text)` gives. LLaMA-Factory's evaluation segments words with jieba for
ROUGE (its BLEU-4 also counts characters); character ROUGE is higher for near-misses and needs no segmenter.
"""

import math
from collections import Counter


def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


def _chars(text: str) -> list[str]:
    return list(text.strip())


def _lcs_length(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (beta = 1) on characters: the longest common subsequence against both lengths."""
    pred, ref = _chars(prediction), _chars(reference)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def bleu4(prediction: str, reference: str) -> float:
    """Sentence BLEU-4 on characters: uniform weights, brevity penalty, and NIST geometric smoothing (Chen &
    Cherry 2014, method 3: the k-th n-gram order with no match counts 1 / (2^k * n-grams)). This is nltk's
    `sentence_bleu(..., smoothing_function=SmoothingFunction().method3)`, which LLaMA-Factory reports.

    An answer shorter than 4 characters has no 4-grams; that order counts as unmatched, so a perfect 2-character
    answer scores 0.59, not 1: read BLEU-4 on short answers next to exact match."""
    pred, ref = _chars(prediction), _chars(reference)
    if not pred or not ref:
        return 0.0
    log_sum, missing = 0.0, 0
    for n in range(1, 5):
        pred_ngrams = Counter(tuple(pred[i : i + n]) for i in range(len(pred) - n + 1))
        ref_ngrams = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
        total = max(1, sum(pred_ngrams.values()))
        matched = sum(min(c, ref_ngrams[g]) for g, c in pred_ngrams.items())
        if n == 1 and matched == 0:
            return 0.0
        if matched == 0:
            missing += 1
            log_sum += math.log(1 / (2**missing * total))
        else:
            log_sum += math.log(matched / total)
    brevity = 1.0 if len(pred) > len(ref) else math.exp(1 - len(ref) / len(pred))
    return brevity * math.exp(log_sum / 4)


def score_answers(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean exact match, ROUGE-L F1 and BLEU-4 over aligned lists of answers."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("nothing to score")
    n = len(references)
    return {
        "exact_match": sum(map(exact_match, predictions, references)) / n,
        "rouge_l": sum(map(rouge_l_f1, predictions, references)) / n,
        "bleu4": sum(map(bleu4, predictions, references)) / n,
    }


def lm_loss(model, tokenizer, texts: list[str], batch_size: int = 32) -> float:
    """Mean language-modelling loss per token (nats) on `texts`, each followed by EOS, padding excluded.

    Forgetting is this loss on held-out biographies after fine-tuning minus the bare base model's."""
    import torch

    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(texts), batch_size):
        rows = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts[start : start + batch_size]]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        logits = logits[:, -width:]  # prompt-learning adapters prepend virtual-token positions
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="none"
        )
        keep = mask[:, 1:].reshape(-1).bool()
        total += nll[keep].sum().item()
        count += int(keep.sum())
    return total / count


def score_model(
    model,
    tokenizer,
    questions: list[dict],
    held_out_text: list[str] | None = None,
    batch_size: int = 64,
    max_new_tokens: int | None = None,
) -> dict:
    """Greedy answers to every question (instruction/input rows with an `output`), scored; plus the LM loss on
    held-out text, for forgetting. The answers come back too, under "answers". max_new_tokens: the longest
    answer (default: mini_world.probe's, enough for the world's short answers)."""
    from mini_world.probe import ANSWER_TOKENS, answer_questions

    answers = answer_questions(model.eval(), tokenizer, questions, batch_size, max_new_tokens or ANSWER_TOKENS)
    scores = score_answers(answers, [q["output"] for q in questions])
    if held_out_text:
        scores["lm_loss"] = lm_loss(model, tokenizer, held_out_text)
    return {**scores, "answers": answers}
