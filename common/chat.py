"""What infer.py does once the model is loaded: one answer, a file of prompts, the web page, or a terminal chat."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .artifacts import artifact_base, resolve_adapter
from .errors import UserError
from .generation import answer_turn, generate_answers, generation_kwargs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .infer_args import InferArguments


def run_modes(
    args: InferArguments, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, lesson_dir: Path, method: str
) -> None:
    """--prompt: one answer on stdout; --input_file: JSON lines; --web: a chat page; otherwise a terminal chat."""
    model.eval()
    gen_kwargs = generation_kwargs(args, tokenizer)
    if args.prompt is not None:
        print(generate_answers(model, tokenizer, [args.prompt], gen_kwargs)[0])
    elif args.input_file is not None:
        path = Path(args.input_file)
        if not path.is_file():
            raise UserError(f"--input_file {path}: no such file")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise UserError(f"--input_file {path} holds no prompts (one per line)")
        for start in range(0, len(lines), args.batch_size):
            chunk = lines[start : start + args.batch_size]
            for prompt, answer in zip(chunk, generate_answers(model, tokenizer, chunk, gen_kwargs)):
                print(json.dumps({"prompt": prompt, "response": answer}, ensure_ascii=False), flush=True)
    elif args.web:
        from .web import serve_web

        folder = resolve_adapter(args.adapter, lesson_dir, method)
        base = args.model_name_or_path or artifact_base(folder)
        about = f"**{lesson_dir.name}** · method `{method}` · adapter `{folder}` · base model `{base}`"
        serve_web(args, model, tokenizer, title=f"{lesson_dir.name} chat", about=about)
    else:
        chat_loop(model, tokenizer, gen_kwargs, args.history_turns)


def chat_loop(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, gen_kwargs: dict, max_turns: int) -> None:
    """A terminal chat that keeps the last `max_turns` turns in the prompt; tokens stream as they are made."""
    from transformers import TextStreamer

    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    memory = f"remembers the last {max_turns} turns" if max_turns else "every question on its own"
    print(f"Chat with the model ({memory}). Empty line or Ctrl-D to quit.", file=sys.stderr)
    history = []
    while True:
        try:
            text = input("Human: ").strip()
        except EOFError:
            break
        if not text:
            break
        print("Assistant: ", end="", flush=True)
        history.append((text, answer_turn(model, tokenizer, history, text, gen_kwargs, max_turns, streamer)))
