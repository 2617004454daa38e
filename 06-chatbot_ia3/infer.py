"""Lesson 06 - chat with an IA3 adapter, or merge it into the base model.

python 06-chatbot_ia3/infer.py --prompt "..."        # one answer on stdout
python 06-chatbot_ia3/infer.py --input_file q.txt    # JSON lines
python 06-chatbot_ia3/infer.py                       # terminal chat, remembers the last 3 turns
python 06-chatbot_ia3/infer.py --web                 # chat page at http://127.0.0.1:7860
python 06-chatbot_ia3/infer.py --merge_to merged/    # a plain transformers model
"""

import sys
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

from common.artifacts import explain_mismatch, load_base_for, resolve_adapter
from common.chat import run_modes
from common.errors import run_cli
from common.generation import generation_kwargs
from common.infer_args import parse_infer_args
from common.merge import save_merged

METHOD = "IA3"


def load_for_inference(adapter=None, model_name_or_path=None, dtype="float32", trust_remote_code=False):
    """Base model + adapter, ready to generate; the base is the one recorded in the adapter unless given."""
    folder = resolve_adapter(adapter, LESSON_DIR, METHOD)
    from peft import PeftModel  # only now: flag and adapter errors come without loading torch

    tokenizer, model = load_base_for(folder, model_name_or_path, dtype, trust_remote_code)
    with explain_mismatch(folder, model):
        model = PeftModel.from_pretrained(model, folder)
    return model, tokenizer


def merge(model, tokenizer, out_dir: str, gen_kwargs: dict) -> None:
    # l scales the rows of W (and b) for an output, its columns for a feed-forward input: a plain model again
    save_merged(model.merge_and_unload(), tokenizer, out_dir, gen_kwargs)


def main(argv: list[str] | None = None) -> None:
    args = parse_infer_args(argv, __doc__)
    model, tokenizer = load_for_inference(args.adapter, args.model_name_or_path, args.dtype, args.trust_remote_code)
    if args.merge_to:
        merge(model, tokenizer, args.merge_to, generation_kwargs(args, tokenizer))
    else:
        run_modes(args, model, tokenizer, LESSON_DIR, METHOD)


if __name__ == "__main__":
    run_cli(main)
