"""Lesson 08 - chat with a QLoRA adapter on its quantised base, or merge it into a full-precision model.

python 08-chatbot_qlora/infer.py --prompt "..."        # one answer on stdout
python 08-chatbot_qlora/infer.py --input_file q.txt    # JSON lines
python 08-chatbot_qlora/infer.py                       # terminal chat, remembers the last 3 turns
python 08-chatbot_qlora/infer.py --web                 # chat page at http://127.0.0.1:7860
python 08-chatbot_qlora/infer.py --merge_to merged/    # dequantised base + adapter: a plain full-precision model

The base is quantised again exactly as the adapter recorded (method.json): the adapter was trained against
those weights. --dtype is the 4-bit compute dtype and the dtype of the unquantised layers.
"""

import sys
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

from common.artifacts import artifact_base, explain_mismatch, read_method_record, resolve_adapter
from common.chat import run_modes
from common.errors import UserError, run_cli
from common.generation import generation_kwargs
from common.infer_args import parse_infer_args
from common.lessons import lesson_module
from common.merge import save_merged
from common.models import check_model_path, load_tokenizer

METHOD = "QLORA"
QUANTIZE = lesson_module(LESSON_DIR.name, "quantize")


def load_for_inference(adapter=None, model_name_or_path=None, dtype="float32", trust_remote_code=False,
                       dequantize=False):  # fmt: skip
    """Quantised base + adapter, ready to generate; the base is the one recorded in the adapter unless given.

    dequantize=True: the quantised base turned back into plain full-precision Linear layers before the adapter
    goes on (the same weights, dequantised once): what --merge_to merges into."""
    folder = resolve_adapter(adapter, LESSON_DIR, METHOD)
    QUANTIZE.require_bitsandbytes()
    from peft import PeftModel  # only now: flag and adapter errors come without loading torch

    saved = read_method_record(folder)
    base = model_name_or_path or artifact_base(folder)
    check_model_path(base)
    tokenizer = load_tokenizer(str(folder), trust_remote_code)
    compute = dtype if saved["quantization"] != "int8" else None
    model = QUANTIZE.load_quantized(base, saved["quantization"], saved["double_quant"], compute, dtype,
                                    QUANTIZE.default_device(), trust_remote_code)  # fmt: skip
    if dequantize:
        model = model.dequantize()
    with explain_mismatch(folder, model):
        model = PeftModel.from_pretrained(model, folder)
    return model, tokenizer


def merge(model, tokenizer, out_dir: str, gen_kwargs: dict) -> None:
    # the base was dequantised on loading (dequantize=True): W' = dequant(W_q) is exactly what the adapter was
    # trained against, and W' + B @ A is added in full precision. peft's own merge on a quantised base would
    # quantise W' + B @ A again (a second rounding of every weight); merge_check.py measures what that changes
    save_merged(model.merge_and_unload(), tokenizer, out_dir, gen_kwargs)


def main(argv: list[str] | None = None) -> None:
    args = parse_infer_args(argv, __doc__)
    if args.merge_to:
        out = Path(args.merge_to)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):  # before minutes of loading
            raise UserError(f"--merge_to {out} exists and is not an empty folder")
    model, tokenizer = load_for_inference(args.adapter, args.model_name_or_path, args.dtype, args.trust_remote_code,
                                          dequantize=bool(args.merge_to))  # fmt: skip
    if args.merge_to:
        merge(model, tokenizer, args.merge_to, generation_kwargs(args, tokenizer))
    else:
        run_modes(args, model, tokenizer, LESSON_DIR, METHOD)


if __name__ == "__main__":
    run_cli(main)
