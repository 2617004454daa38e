"""Answer questions with the bare base model (no adapter): the "before training" side of a lesson's demo.

    python -m common.ask_base --model_name_or_path tiny-bloom --input_file data/demo_questions.txt

Greedy decoding, the same prompt template and generation code as every infer.py; prints JSON lines.
"""

import argparse
import json
from pathlib import Path

from .errors import UserError, run_cli


def main(argv: list[str] | None = None) -> None:
    from .generation import generate_answers
    from .models import load_base_model, load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="base model: a hub id or a local folder")
    parser.add_argument("--input_file", required=True, help="text file, one instruction per line")
    parser.add_argument("--max_new_tokens", type=int, default=30)
    args = parser.parse_args(argv)
    path = Path(args.input_file)
    if not path.is_file():
        raise UserError(f"--input_file {path}: no such file")
    questions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer = load_tokenizer(args.model_name_or_path)
    model = load_base_model(args.model_name_or_path).eval()
    gen = {"max_new_tokens": args.max_new_tokens, "do_sample": False,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    for question, answer in zip(questions, generate_answers(model, tokenizer, questions, gen)):
        print(json.dumps({"prompt": question, "response": answer}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    run_cli(main)
