"""Lesson 05 - chat with a LoRA adapter, or merge it into the base model.

    python 05-chatbot_lora/infer.py --prompt "..."        # one answer on stdout
    python 05-chatbot_lora/infer.py --input_file q.txt    # JSON lines
    python 05-chatbot_lora/infer.py                       # interactive chat
    python 05-chatbot_lora/infer.py --merge_to merged/    # a plain transformers model
"""

import sys
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))

from common.chat import parse_infer_args, resolve_adapter, run_modes, save_merged  # noqa: E402
from common.errors import UserError, run_cli  # noqa: E402
from common.training import load_base_model, load_tokenizer  # noqa: E402
from peft import PeftConfig, PeftModel  # noqa: E402

METHOD = "LORA"


def load_for_inference(adapter: str | None, model_name_or_path: str | None = None, dtype: str = "float32",
                       trust_remote_code: bool = False):
    """Base model + adapter, ready to generate; the base is read from the adapter unless given."""
    folder = resolve_adapter(adapter, LESSON_DIR, METHOD)
    base = model_name_or_path or PeftConfig.from_pretrained(folder).base_model_name_or_path
    tokenizer = load_tokenizer(str(folder), trust_remote_code)
    model = load_base_model(base, dtype, trust_remote_code)
    try:
        model = PeftModel.from_pretrained(model, folder)
    except (RuntimeError, ValueError, KeyError) as exc:
        trained_on = PeftConfig.from_pretrained(folder).base_model_name_or_path
        raise UserError(f"{folder} does not fit the base model {base}; it was trained on {trained_on}") from exc
    return model, tokenizer


def main(argv: list[str] | None = None) -> None:
    args = parse_infer_args(argv, __doc__)
    model, tokenizer = load_for_inference(args.adapter, args.model_name_or_path, args.dtype, args.trust_remote_code)
    if args.merge_to:
        # W + B @ A becomes one matrix again: a plain model, no peft needed to load it
        save_merged(model.merge_and_unload(), tokenizer, args.merge_to)
        return
    run_modes(args, model, tokenizer)


if __name__ == "__main__":
    run_cli(main)
