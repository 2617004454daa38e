"""What --merge_to should merge into, measured: a QLoRA adapter merged three ways, each against the adapter on
its quantised base (what training saw), on the mini world's held-out questions.

python 08-chatbot_qlora/merge_check.py --adapter 08-chatbot_qlora/output-mini

  dequantised  dequant(W_q) + B @ A in full precision (infer.py --merge_to): the trained function, 4x the bytes
  quantised    peft's merge_and_unload on the 4-bit base: dequantise, add, quantise again (small, lossy)
  original     the full-precision base W + B @ A: B @ A was learnt against dequant(W_q), not W
"""

import argparse
import sys
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))

from common.errors import run_cli
from common.lessons import lesson_module

WORLD = LESSON_DIR.parent / "data" / "world"


def merged_three_ways(adapter: str):
    """(unmerged, {mode: merged model}, tokenizer)."""
    from peft import PeftModel

    from common.artifacts import artifact_base, resolve_adapter
    from common.models import load_base_model

    infer = lesson_module(LESSON_DIR.name, "infer")
    unmerged, tokenizer = infer.load_for_inference(adapter)
    folder = resolve_adapter(adapter, LESSON_DIR, infer.METHOD)
    merged = {
        "dequantised": infer.load_for_inference(adapter, dequantize=True)[0].merge_and_unload(),
        "quantised": infer.load_for_inference(adapter)[0].merge_and_unload(),
        "original": PeftModel.from_pretrained(load_base_model(artifact_base(folder)), folder).merge_and_unload(),
    }
    return unmerged, merged, tokenizer


def main(argv=None) -> None:
    import torch

    from common.check_by_hand import left_padded_batch
    from measure.scoring import score_model
    from mini_world.generate import read_jsonl

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="lesson 08's output folder or its adapter/ folder")
    args = parser.parse_args(argv)
    questions = read_jsonl(WORLD / "qa_test.jsonl")
    unmerged, merged, tokenizer = merged_three_ways(args.adapter)
    inputs = {k: v for k, v in left_padded_batch(tokenizer).items() if k != "labels"}
    with torch.no_grad():
        reference_logits = unmerged.eval()(**inputs).logits
    reference = score_model(unmerged, tokenizer, questions)
    print(f"{len(questions)} held-out questions; reference: the adapter on its quantised base, exact match "
          f"{reference['exact_match']:.1%}")  # fmt: skip
    print("| merged into | answers equal to the reference | exact match | max abs logit difference |")
    print("|---|---:|---:|---:|")
    for mode, model in merged.items():
        scored = score_model(model, tokenizer, questions)
        same = sum(a == b for a, b in zip(scored["answers"], reference["answers"]))
        with torch.no_grad():
            diff = (model.eval()(**inputs).logits - reference_logits).abs().max().item()
        print(f"| {mode} | {same} of {len(questions)} | {scored['exact_match']:.1%} | {diff:.3g} |")


if __name__ == "__main__":
    run_cli(main)
