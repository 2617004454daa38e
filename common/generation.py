"""Generation: infer.py's settings, the one generate() path every mode uses, and conversation history."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from .errors import UserError
from .prompt_format import conversation_text, instruction_prompt, stop_token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from transformers.generation.streamers import BaseStreamer

    from .infer_args import InferArguments


def generation_kwargs(args: InferArguments, tokenizer: PreTrainedTokenizerBase) -> dict:
    """`generate()` arguments for infer.py's flags: greedy or sampled, stopping at EOS (in the model's chat
    format also at its end-of-turn token)."""
    kwargs = {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": args.do_sample,
        "eos_token_id": stop_token_ids(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if args.do_sample:
        kwargs.update(temperature=args.temperature, top_p=args.top_p)
    return kwargs


def check_generation_support(model: PreTrainedModel) -> None:
    """Refuse a library pair known to make generate() silently wrong for prompt-learning adapters.

    transformers 5.24 passes the generation cache as `cache`; peft up to 0.21.2 reads `past_key_values`, so
    virtual tokens are re-injected at every step (prompt tuning, P-tuning) or dropped (prefix tuning).
    """
    import peft
    import transformers
    from packaging.version import Version

    config = getattr(model, "active_peft_config", None)
    if (
        config is not None
        and config.is_prompt_learning
        and Version(transformers.__version__) >= Version("5.24.0")
        and Version(peft.__version__) <= Version("0.21.2")
    ):
        raise UserError(
            f"transformers {transformers.__version__} with peft {peft.__version__} generates wrong answers for "
            f"{config.peft_type.value} adapters; install the tested pair: pip install -r requirements.txt"
        )


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    instructions: list[str],
    gen_kwargs: dict,
    streamer: BaseStreamer | None = None,
) -> list[str]:
    """Answer a batch of instructions in one left-padded generate() call, in the tokenizer's prompt format."""
    prompts = [instruction_prompt(tokenizer, text) for text in instructions]
    return generate_from_prompts(model, tokenizer, prompts, gen_kwargs, streamer)


def generate_from_prompts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    gen_kwargs: dict,
    streamer: BaseStreamer | None = None,
) -> list[str]:
    """Answer ready-made prompts (e.g. a conversation) in one left-padded generate() call (one call per prompt
    where padding would move the virtual tokens: see pads_shift_virtual_tokens)."""
    import torch

    check_generation_support(model)
    if len(prompts) > 1 and pads_shift_virtual_tokens(model):
        return [generate_from_prompts(model, tokenizer, [p], gen_kwargs, streamer)[0] for p in prompts]
    tokenizer.padding_side = "left"  # the answer must start right after every prompt
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    batch = batch.to(model.device)
    with torch.no_grad():
        out = model.generate(**batch, **gen_kwargs, streamer=streamer)
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new_tokens]


def pads_shift_virtual_tokens(model: PreTrainedModel) -> bool:
    """True where a left-padded batch would change the answer: prompt tuning or P-tuning on a model with
    position ids (RoPE: Qwen, Llama). peft 0.21.2 puts the virtual tokens in front of the pads and drops the
    position_ids generate() builds from the mask (PeftModel._adjust_prompt_learning_kwargs), so a padded row's
    tokens sit further from the virtual tokens than in training. BLOOM's ALiBi reads positions from the mask,
    and prefix tuning keeps position_ids, so both stay exact in a batch."""
    import inspect

    config = getattr(model, "active_peft_config", None)
    if config is None or not config.is_prompt_learning or config.peft_type.value == "PREFIX_TUNING":
        return False
    return "position_ids" in inspect.signature(model.get_base_model().forward).parameters


# BLOOM's pretraining sequence length: its config records no limit (ALiBi positions have none)
FALLBACK_CONTEXT = 2048


def prompt_budget(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int) -> int:
    """Tokens a prompt may take: the model's context less the answer and any virtual tokens of the adapter."""
    config = model.config
    limits = [getattr(config, name, None) for name in ("max_position_embeddings", "n_positions", "seq_length")]
    limit = next((n for n in limits if isinstance(n, int)), None)
    if limit is None and tokenizer.model_max_length < 10**6:  # tokenizers without a limit report 1e30
        limit = tokenizer.model_max_length
    peft_config = getattr(model, "active_peft_config", None)
    virtual = peft_config.num_virtual_tokens if peft_config is not None and peft_config.is_prompt_learning else 0
    return (limit or FALLBACK_CONTEXT) - max_new_tokens - virtual


def conversation_prompt(
    tokenizer: PreTrainedTokenizerBase, history: list[tuple[str, str]], message: str, max_turns: int, budget: int
) -> tuple[str, int]:
    """The prompt for `message` with up to `max_turns` earlier (question, answer) turns in the training format
    (common.prompt_format);
    the oldest turns go first while the prompt is longer than `budget` tokens. Returns it and the turns kept."""
    turns = list(history[-max_turns:]) if max_turns > 0 else []
    while True:
        prompt = conversation_text(tokenizer, turns, message)
        if not turns or len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= budget:
            return prompt, len(turns)
        turns.pop(0)


def answer_turn(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    history: list[tuple[str, str]],
    message: str,
    gen_kwargs: dict,
    max_turns: int,
    streamer: BaseStreamer | None = None,
) -> str:
    """One chat turn: the answer to `message`, given the conversation so far."""
    budget = prompt_budget(model, tokenizer, gen_kwargs["max_new_tokens"])
    prompt, kept = conversation_prompt(tokenizer, history, message, max_turns, budget)
    wanted = min(len(history), max_turns)
    if kept < wanted:
        print(f"[history] dropped the {wanted - kept} oldest turn(s) to fit {budget} prompt tokens",
              file=sys.stderr, flush=True)  # fmt: skip
    return generate_from_prompts(model, tokenizer, [prompt], gen_kwargs, streamer)[0]
