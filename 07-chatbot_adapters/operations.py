"""Lesson 07 - peft's operations on several adapters, one step at a time, on two trained LoRA adapters.

python 07-chatbot_adapters/operations.py --adapter short=07-chatbot_adapters/output-short \
    --adapter sentence=07-chatbot_adapters/output-sentence

1. one base, two adapters (PeftModel.from_pretrained, then load_adapter)   2. set_adapter
3. disable_adapter()   4. one generate() call whose rows go to different adapters (adapter_names)
5. add_weighted_adapter: a third adapter combined from the two, saved and reloaded   6. delete_adapter
Greedy answers throughout, through infer.py's own generate path.
"""

import sys
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

from common.errors import UserError, run_cli
from common.lessons import lesson_module

QUESTIONS = ["刘宇若毕业于哪所大学？", "潘佳怡出生在哪座城市？"]  # two people never quizzed in training
COMBINED = "both"


def describe(model, name: str) -> str:
    config = model.peft_config[name]
    return f"{name} (r={config.r}, {', '.join(sorted(config.target_modules))})"


def main(argv: list[str] | None = None) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", action="append", nargs="+", help="NAME=PATH, exactly two (as infer.py)")
    parser.add_argument("--question", action="append", help=f"default: {' '.join(QUESTIONS)}")
    parser.add_argument("--weights", type=float, nargs=2, default=[1.0, 1.0], help="add_weighted_adapter weights")
    parser.add_argument("--save_to", default=str(LESSON_DIR / "output-both"), help="where the combination goes")
    parser.add_argument("--max_new_tokens", type=int, default=16)
    args = parser.parse_args(argv)
    infer = lesson_module("07", "infer")
    adapters = infer.parse_adapters(args.adapter)
    if len(adapters) != 2:
        raise UserError(f"pass exactly two --adapter NAME=PATH, not {len(adapters)}")
    first, second = adapters
    questions = args.question or QUESTIONS

    from peft import PeftModel

    from common.artifacts import load_base_for
    from common.generation import generate_answers

    tokenizer, base = load_base_for(adapters[first], None, "float32", False)
    greedy = {"max_new_tokens": args.max_new_tokens, "do_sample": False, "eos_token_id": tokenizer.eos_token_id,
              "pad_token_id": tokenizer.pad_token_id}  # fmt: skip

    def ask(model, prompts=questions, **extra):
        return generate_answers(model, tokenizer, list(prompts), {**greedy, **extra})

    # 1. the first adapter wraps the base; the second is loaded beside it under its own name
    model = PeftModel.from_pretrained(base, adapters[first], adapter_name=first)
    model.load_adapter(adapters[second], adapter_name=second)
    model.eval()
    print(f"== 1. one base model, {len(model.peft_config)} adapters: "
          f"{'; '.join(describe(model, n) for n in model.peft_config)}")  # fmt: skip
    print(f"active adapter: {model.active_adapter}")
    layer = model.base_model.model.transformer.h[0].self_attention.query_key_value
    print(f"layer 0 query_key_value holds lora_A for: {', '.join(layer.lora_A)}")

    # 2. set_adapter switches which adapter every row uses
    alone = {}
    for name in adapters:
        model.set_adapter(name)
        alone[name] = ask(model)
    # 3. disable_adapter(): inside the block the LoRA branches are skipped, so the bare base answers
    with model.disable_adapter():
        alone["base"] = ask(model)
    print("== 2. set_adapter(name), 3. with disable_adapter(): base")
    for i, question in enumerate(questions):
        print(f"Q: {question}")
        for name, answers in alone.items():
            print(f"   {name:9} {answers[i]!r}")

    # 4. one generate() call: row i goes to adapter_names[i] ("__base__": the bare model)
    rows = [(q, name) for q in questions for name in alone]
    names = [name for _, name in rows]
    mixed = ask(model, [q for q, _ in rows], **infer.route(names))
    same = [mixed[k] == alone[name][questions.index(q)] for k, (q, name) in enumerate(rows)]
    print(f"== 4. one generate() call, adapter_names={infer.route(names)['adapter_names']}")
    print(f"{sum(same)} of {len(rows)} rows equal the same adapter alone")

    # 5. a new adapter from the two: "cat" stacks the A and B matrices, so it adds the two updates exactly
    weights = args.weights
    model.add_weighted_adapter([first, second], weights, COMBINED, combination_type="cat")
    model.eval()  # peft 0.21.2 builds the new adapter's dropout in training mode: greedy answers would be random
    model.set_adapter(COMBINED)
    combined = ask(model)
    print(f"== 5. add_weighted_adapter([{first!r}, {second!r}], {weights}, {COMBINED!r}, combination_type='cat'): "
          f"{describe(model, COMBINED)}")  # fmt: skip
    for question, answer in zip(questions, combined):
        print(f"Q: {question}  {COMBINED}: {answer!r}")
    save_to = Path(args.save_to)
    model.save_pretrained(save_to, selected_adapters=[COMBINED])  # a named adapter goes to save_to/<name>/
    tokenizer.save_pretrained(save_to / COMBINED)
    tokenizer2, fresh = load_base_for(save_to / COMBINED, None, "float32", False)
    reloaded = PeftModel.from_pretrained(fresh, save_to / COMBINED).eval()
    again = ask(reloaded)
    print(f"saved to {save_to / COMBINED}; reloaded on a fresh base: same answers: {again == combined}")

    # 6. delete_adapter removes its layers and config; the others stay
    model.set_adapter(first)
    model.delete_adapter(second)
    print(f"== 6. delete_adapter({second!r}): adapters now {', '.join(model.peft_config)}")
    return {"alone": alone, "mixed": mixed, "rows": rows, "combined": combined, "reloaded": again,
            "adapters_left": list(model.peft_config)}  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
