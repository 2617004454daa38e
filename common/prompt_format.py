"""Which prompt format a run trains and chats in: the course's template (the default, so results compare) or
the tokenizer's own chat template (`--prompt_format model`, for instruct models).

The format travels with the tokenizer: `load_tokenizer` records it in the tokenizer's init kwargs, so every
folder train.py saves (adapter/, checkpoints, `infer.py --merge_to`) has it in tokenizer_config.json, and
infer.py, which loads the tokenizer saved with the adapter, finds it there without being told.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .course_template import build_chat_prompt, build_prompt, chat_template, user_message
from .errors import UserError, first_line

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

COURSE, MODEL = "course", "model"
PROMPT_FORMATS = (COURSE, MODEL)
RECORD_KEY = "prompt_format"  # the key in tokenizer_config.json
PROMPT_FORMAT_HELP = (
    "course: the course's template ('Human: ...\\n\\nAssistant: '), the same for every model, so results "
    "compare. model: the tokenizer's own chat template (for instruct models, e.g. Qwen2.5-Instruct), each row "
    "rendered as a user turn and an assistant turn, the loss on the answer and the template's end-of-turn token. "
    "infer.py reads the format from the adapter's tokenizer; it is never passed again."
)
# a probe reply, to find what the template writes after an answer
_PROBE = [{"role": "user", "content": "1"}, {"role": "assistant", "content": "OK"}]


def apply_prompt_format(tokenizer: PreTrainedTokenizerBase, prompt_format: str | None, source: str) -> None:
    """Give the tokenizer the template of `prompt_format` (None: the format its folder recorded, else the
    course's) and record it. `source` names the tokenizer in errors."""
    fmt = prompt_format or tokenizer.init_kwargs.get(RECORD_KEY) or COURSE
    if fmt not in PROMPT_FORMATS:
        raise UserError(f"prompt format {fmt!r} (from {source}): pick one of {', '.join(PROMPT_FORMATS)}")
    if fmt == MODEL:
        if not tokenizer.chat_template:
            raise UserError(
                f"--prompt_format model: the tokenizer of {source} has no chat template (a base model, not an "
                "instruct model); use --prompt_format course"
            )
        end_of_turn_id(tokenizer, source)  # refuse a template with no end-of-turn token before any training
    else:
        tokenizer.chat_template = chat_template()  # so every saved tokenizer carries the course's format
    tokenizer.init_kwargs[RECORD_KEY] = fmt


def prompt_format_of(tokenizer: PreTrainedTokenizerBase) -> str:
    return tokenizer.init_kwargs.get(RECORD_KEY) or COURSE


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # jinja raises its own types, and templates raise_exception() with anything
        raise UserError(f"the model's chat template cannot render a user/assistant turn: {first_line(exc)}") from exc


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase, source: str = "this tokenizer") -> int:
    """The special token the chat template writes right after an assistant's answer (ChatML's <|im_end|>,
    Llama 3's <|eot_id|>): what the model learns to end with, and where generation stops."""
    text = _render(tokenizer, _PROBE, add_generation_prompt=False)
    tail = text[text.rindex("OK") + len("OK") :]
    special = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    found = [i for i in tokenizer(tail, add_special_tokens=False)["input_ids"] if i in special]
    if not found:
        raise UserError(
            f"the chat template of {source} writes no special token after an answer ({tail!r}), so the model "
            "could not learn where an answer ends; use --prompt_format course"
        )
    return found[0]


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> int | list[int]:
    """What generate() stops at: EOS, and in the model's format also the template's end-of-turn token."""
    if prompt_format_of(tokenizer) == COURSE:
        return tokenizer.eos_token_id
    ids = [end_of_turn_id(tokenizer), tokenizer.eos_token_id]
    return list(dict.fromkeys(i for i in ids if i is not None))


def instruction_prompt(tokenizer: PreTrainedTokenizerBase, instruction: str, input: str = "") -> str:
    """The text a row's answer follows, in the tokenizer's recorded format."""
    if prompt_format_of(tokenizer) == COURSE:
        return build_prompt(instruction, input)
    return _render(tokenizer, [{"role": "user", "content": user_message(instruction, input)}], True)


def conversation_text(tokenizer: PreTrainedTokenizerBase, history: list[tuple[str, str]], message: str) -> str:
    """A conversation, ending where the next answer starts: the course's turns, or the chat template applied
    to the whole history."""
    if prompt_format_of(tokenizer) == COURSE:
        return build_chat_prompt(history, message, tokenizer.eos_token)
    messages = [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    return _render(tokenizer, [*messages, {"role": "user", "content": message}], True)


def model_format_rows(
    tokenizer: PreTrainedTokenizerBase, instructions: list[str], inputs: list[str], outputs: list[str]
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, whole row ids) per row in the chat template: the row is the rendering of [user, assistant],
    cut after the end-of-turn token (what follows it is the layout of a next turn, which generation never
    reaches); the prompt is the rendering of the user turn with the generation prompt, and must be a token prefix
    of the row, or the -100 mask would cover the wrong tokens."""
    eot = end_of_turn_id(tokenizer)
    users = [[{"role": "user", "content": user_message(i, x)}] for i, x in zip(instructions, inputs)]
    prompts = [_render(tokenizer, u, True) for u in users]
    rows = [_render(tokenizer, [*u, {"role": "assistant", "content": o}], False) for u, o in zip(users, outputs)]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    row_ids = tokenizer(rows, add_special_tokens=False)["input_ids"]
    out = []
    for p, ids, instruction in zip(prompt_ids, row_ids, instructions):
        if ids[: len(p)] != p:
            raise UserError(
                f"the chat template renders the prompt of the row {instruction[:30]!r} differently alone than inside "
                "the whole conversation, so the -100 label mask cannot be placed; use --prompt_format course"
            )
        ends = [k for k in range(len(p), len(ids)) if ids[k] == eot]
        if not ends:
            raise UserError(f"the chat template wrote no end-of-turn token after the answer of {instruction[:30]!r}")
        out.append((p, ids[: ends[-1] + 1]))
    return out


def prompt_and_row_ids(
    tokenizer: PreTrainedTokenizerBase, instructions: list[str], inputs: list[str | None], outputs: list[str]
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, whole row ids) per row, in the tokenizer's prompt format: the course's template with the
    answer and EOS, or the model's chat template (model_format_rows)."""
    inputs = [x or "" for x in inputs]
    if prompt_format_of(tokenizer) == MODEL:
        return model_format_rows(tokenizer, instructions, inputs, outputs)
    prompts = [build_prompt(i, x) for i, x in zip(instructions, inputs)]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(outputs, add_special_tokens=False)["input_ids"]
    return [(p, p + a + [tokenizer.eos_token_id]) for p, a in zip(prompt_ids, answer_ids)]
