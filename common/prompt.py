"""The one prompt template, used by training and by inference."""


def build_prompt(instruction: str, input: str = "") -> str:
    """Format one alpaca row the way the course does.

    >>> build_prompt("把句子翻译成英文。", "你好")
    'Human: 把句子翻译成英文。\\n你好\\n\\nAssistant: '
    """
    return "\n".join(["Human: " + instruction, input]).strip() + "\n\nAssistant: "
