"""Generation speed: greedy tokens/s of the bare base, lesson 05's LoRA (peft wrapper and merged), and a batch."""

import time

from common.lessons import LESSONS, lesson_module

PROMPTS = [
    "地球为什么有四季？",
    "用一句话解释什么是光合作用。",
    "写一首关于秋天的短诗。",
    "把“你好”翻译成英文。",
    "列出三种常见的水果。",
    "今天是星期二，17天后是星期几？",
    "解释一下什么是机器学习。",
    "给出一个健康早餐的建议。",
]


def generation_speed(spec: dict) -> dict:
    """In a fresh process (measure.process): greedy tokens/s of the bare base, LoRA (peft wrapper) and merged
    LoRA, one prompt per call, and of the base with batch 8."""
    import torch

    from common.generation import generate_answers, generation_kwargs
    from common.infer_args import InferArguments
    from common.models import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(spec["model"])
    model = load_base_model(spec["model"]).eval()
    n = spec["tokens"]
    # every answer exactly n tokens long, so each mode does the same work
    gen = {**generation_kwargs(InferArguments(max_new_tokens=n, do_sample=False), tokenizer), "min_new_tokens": n}

    def tokens_per_s(m, batch_size: int) -> tuple[float, list[str]]:
        generate_answers(m, tokenizer, PROMPTS[:1], {**gen, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
        start, answers = time.perf_counter(), []
        for i in range(0, len(PROMPTS), batch_size):
            answers += generate_answers(m, tokenizer, PROMPTS[i : i + batch_size], gen)
        return len(PROMPTS) * n / (time.perf_counter() - start), answers

    figures = {}
    figures["base"], single = tokens_per_s(model, 1)
    figures["base_batch8"], batched = tokens_per_s(model, 8)
    lora = lesson_module(LESSONS["05"], "train")
    model = lora.add_method(model, lora.ScriptArguments(), tokenizer)
    with torch.no_grad():  # a nonzero update, so merging really changes the weights
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01, generator=torch.Generator().manual_seed(0))
    model.eval()
    figures["lora"], _ = tokens_per_s(model, 1)
    figures["lora_merged"], _ = tokens_per_s(model.merge_and_unload(), 1)
    figures["batched_same_answers"] = single == batched
    return figures


def print_generation(model_label: str, tokens: int, g: dict) -> None:
    print(
        f"\ngeneration: {model_label}; greedy, {len(PROMPTS)} prompts, {tokens} new tokens each; "
        "LoRA = lesson 05's default adapter with random nonzero B"
    )
    print(f"{'mode':<46} {'tokens/s':>9} {'ratio':>7}")
    for key, label, ref in (
        ("base", "bare base model, one prompt per call", "base"),
        ("lora", "LoRA (peft wrapper), one prompt per call", "base"),
        ("lora_merged", "merged LoRA, one prompt per call", "base"),
        ("base_batch8", "bare base, batch 8 (the --input_file path)", "base"),
    ):
        print(f"{label:<46} {g[key]:>9.1f} {g[key] / g[ref]:>6.2f}x")
    print(f"batch 8 gives the same greedy answers as one prompt per call: {g['batched_same_answers']}")
