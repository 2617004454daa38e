"""The one prompt template, used by training and by inference."""

import json


def build_prompt(instruction: str, input: str = "") -> str:
    """Format one alpaca row the way the course does.

    >>> build_prompt("把句子翻译成英文。", "你好")
    'Human: 把句子翻译成英文。\\n你好\\n\\nAssistant: '
    """
    return "\n".join(["Human: " + instruction, input]).strip() + "\n\nAssistant: "


def build_chat_prompt(history: list[tuple[str, str]], message: str, eos_token: str) -> str:
    """A conversation in the training format: each earlier turn exactly as a training row (prompt, answer, EOS),
    then the new prompt. With no history this is `build_prompt(message)`.

    >>> build_chat_prompt([("你好", "你好！")], "再见", "</s>")
    'Human: 你好\\n\\nAssistant: 你好！</s>Human: 再见\\n\\nAssistant: '
    """
    return "".join(build_prompt(q) + a + eos_token for q, a in history) + build_prompt(message)


def user_message(instruction: str, input: str = "") -> str:
    """An alpaca row as one chat message: `build_prompt(instruction, input)` == `build_prompt(user_message(...))`."""
    return "\n".join([instruction, input]) if input else instruction


def chat_template() -> str:
    """`build_chat_prompt` as a Jinja chat template, derived from `build_prompt` so the two cannot drift apart.

    `tokenizer.apply_chat_template(messages, add_generation_prompt=True)` then renders the training prompt: the
    text before the instruction, the `.strip()` of the whole, and the assistant marker come from `build_prompt`.
    """
    head, rest = build_prompt("\x01", "\x02").split("\x01")
    _, tail = rest.split("\x02")
    head, tail = json.dumps(head), json.dumps(tail)
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}{{ (" + head + " ~ message['content']) | trim }}"
        "{%- elif message['role'] == 'assistant' -%}{{ " + tail + " ~ message['content'] ~ eos_token }}"
        "{%- else -%}{{ raise_exception('this model was trained on user/assistant turns only, not '"
        " ~ message['role']) }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ " + tail + " }}{%- endif -%}"
    )
