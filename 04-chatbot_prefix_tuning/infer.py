"""Lesson 04 - chat with a prefix tuning adapter.

python 04-chatbot_prefix_tuning/infer.py --prompt "..."        # one answer on stdout
python 04-chatbot_prefix_tuning/infer.py --input_file q.txt    # JSON lines
python 04-chatbot_prefix_tuning/infer.py                       # terminal chat, remembers the last 3 turns
python 04-chatbot_prefix_tuning/infer.py --web                 # chat page at http://127.0.0.1:7860
"""

import sys
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

from common.artifacts import explain_mismatch, load_base_for, resolve_adapter
from common.chat import run_modes
from common.errors import UserError, run_cli
from common.infer_args import parse_infer_args

METHOD = "PREFIX_TUNING"


def load_for_inference(adapter=None, model_name_or_path=None, dtype="float32", trust_remote_code=False):
    """Base model + adapter, ready to generate; the base is the one recorded in the adapter unless given."""
    folder = resolve_adapter(adapter, LESSON_DIR, METHOD)
    from peft import PeftModel  # only now: flag and adapter errors come without loading torch

    tokenizer, model = load_base_for(folder, model_name_or_path, dtype, trust_remote_code)
    with explain_mismatch(folder, model, prefix_widths(model.config)):
        model = PeftModel.from_pretrained(model, folder)
    return model, tokenizer


def prefix_widths(cfg) -> set[int]:
    """The widths a prefix may have on this model: the hidden size, or with grouped-query attention
    num_key_value_heads x head_dim, which is how peft 0.21.2 sizes it (utils/other.py,
    _prepare_prompt_learning_config)."""
    widths = {cfg.hidden_size}
    if getattr(cfg, "num_key_value_heads", None):
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        widths.add(cfg.num_key_value_heads * head_dim)
    return widths


def refuse_merge(adapter: str | None) -> None:
    resolve_adapter(adapter, LESSON_DIR, METHOD)  # an adapter of another lesson is reported as such
    raise UserError(
        "--merge_to: prefix tuning cannot be merged into the base model "
        "(the prefixes are extra keys and values, not a change to any weight); "
        "use infer.py with the adapter instead"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_infer_args(argv, __doc__)
    if args.merge_to:
        refuse_merge(args.adapter)  # before loading gigabytes of base model for nothing
    model, tokenizer = load_for_inference(args.adapter, args.model_name_or_path, args.dtype, args.trust_remote_code)
    run_modes(args, model, tokenizer, LESSON_DIR, METHOD)


if __name__ == "__main__":
    run_cli(main)
