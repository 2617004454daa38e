"""Lesson 01 - chat with a BitFit model (base model + trained biases), or save it as one full model.

python 01-chatbot_bitfit/infer.py --prompt "..."        # one answer on stdout
python 01-chatbot_bitfit/infer.py --input_file q.txt    # JSON lines
python 01-chatbot_bitfit/infer.py                       # terminal chat, remembers the last 3 turns
python 01-chatbot_bitfit/infer.py --web                 # chat page at http://127.0.0.1:7860
python 01-chatbot_bitfit/infer.py --merge_to merged/    # a plain transformers model
"""

import sys
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

from common.artifacts import explain_mismatch, load_base_for, read_method_record, resolve_adapter
from common.chat import run_modes
from common.errors import run_cli
from common.generation import generation_kwargs
from common.infer_args import parse_infer_args
from common.merge import save_merged

METHOD = "BITFIT"


def load_for_inference(adapter=None, model_name_or_path=None, dtype="float32", trust_remote_code=False):
    """Base model with the trained biases written over its own; the base is the one recorded unless given."""
    folder = resolve_adapter(adapter, LESSON_DIR, METHOD)
    from safetensors.torch import load_file  # only now: flag and adapter errors come without loading torch

    tokenizer, model = load_base_for(folder, model_name_or_path, dtype, trust_remote_code)
    biases = load_file(folder / read_method_record(folder)["weights"])  # the file train.py named
    with explain_mismatch(folder, model):
        expected = {name for name, _ in model.named_parameters() if "bias" in name}
        if set(biases) != expected:
            raise KeyError(f"{len(set(biases) ^ expected)} bias names differ, e.g. {sorted(set(biases) ^ expected)[0]}")
        model.load_state_dict(biases, strict=False)  # raises on a shape mismatch
    return model, tokenizer


def merge(model, tokenizer, out_dir: str, gen_kwargs: dict) -> None:
    # the biases already live inside the model: saving it gives a full standalone model
    save_merged(model, tokenizer, out_dir, gen_kwargs)


def main(argv: list[str] | None = None) -> None:
    args = parse_infer_args(argv, __doc__)
    model, tokenizer = load_for_inference(args.adapter, args.model_name_or_path, args.dtype, args.trust_remote_code)
    if args.merge_to:
        merge(model, tokenizer, args.merge_to, generation_kwargs(args, tokenizer))
    else:
        run_modes(args, model, tokenizer, LESSON_DIR, METHOD)


if __name__ == "__main__":
    run_cli(main)
