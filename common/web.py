"""The chat page of `infer.py --web` (gradio, imported only for --web): streamed answers, infer.py's sampling
controls, the conversation kept in the prompt."""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

from .errors import UserError, first_line
from .generation import answer_turn, generation_kwargs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .infer_args import InferArguments


def import_gradio() -> ModuleType:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # its analytics thread fails offline
    try:
        import gradio
    except ImportError as exc:
        raise UserError(f"--web needs gradio ({exc}); install it with: pip install -r requirements-web.txt") from exc
    return gradio


def check_port_free(host: str, port: int) -> None:
    """Refuse a busy port in one line, before gradio is imported and the model loaded."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"--web cannot listen on {host}:{port} ({exc.strerror or exc}); "
                            f"pass another --port or --host") from exc  # fmt: skip


def stream_turn(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    history: list[tuple[str, str]],
    message: str,
    gen_kwargs: dict,
    max_turns: int,
) -> Iterator[str]:
    """Yield the answer as it grows, then the final answer: the same text `answer_turn` returns."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    result = {}

    def work():
        try:
            result["answer"] = answer_turn(model, tokenizer, history, message, gen_kwargs, max_turns, streamer)
        except BaseException as exc:  # handed to the caller below
            result["error"] = exc
            streamer.end()  # unblock the loop below

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    shown = ""
    for piece in streamer:
        shown += piece
        yield shown
    thread.join()
    if "error" in result:
        raise result["error"]
    yield result["answer"]


def serve_web(
    args: InferArguments,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    title: str,
    about: str,
    choices: dict[str, dict] | None = None,
    chosen: str | None = None,
) -> None:
    """A local chat page: streamed answers, the CLI's sampling controls, the conversation kept in the prompt.
    `choices` (lesson 07): label -> extra generate() arguments, offered in a drop-down that starts at `chosen`."""
    gr = import_gradio()

    def as_messages(turns):
        return [{"role": role, "content": text} for q, a in turns for role, text in (("user", q), ("assistant", a))]

    def respond(message, turns, do_sample, temperature, top_p, max_new_tokens, history_turns, choice=None):
        message = message.strip()
        if not message:
            yield as_messages(turns), turns, ""
            return
        settings = dataclasses.replace(args, do_sample=do_sample, temperature=temperature, top_p=top_p,
                                       max_new_tokens=int(max_new_tokens))  # fmt: skip
        gen_kwargs = {**generation_kwargs(settings, tokenizer), **(choices[choice] if choices else {})}
        try:
            for shown in stream_turn(model, tokenizer, turns, message, gen_kwargs, int(history_turns)):
                yield as_messages(turns + [(message, shown)]), turns, ""
        except UserError as exc:
            raise gr.Error(str(exc)) from exc
        turns = turns + [(message, shown)]
        yield as_messages(turns), turns, ""

    with gr.Blocks(title=title) as demo:
        gr.Markdown(about)
        if choices:
            choice = gr.Dropdown(list(choices), value=chosen, label="adapter", elem_id="adapter")
        chatbot = gr.Chatbot(
            label="Conversation", height=420, render_markdown=False, buttons=["copy", "copy_all"], elem_id="chat"
        )
        turns = gr.State([])
        with gr.Row():
            box = gr.Textbox(placeholder="Type a message, press Enter", show_label=False, scale=6, elem_id="message")
            send = gr.Button("Send", variant="primary", scale=1)
        with gr.Accordion("Generation settings (the flags of infer.py)", open=True), gr.Row():
            do_sample = gr.Checkbox(args.do_sample, label="do_sample (off = greedy)")
            temperature = gr.Slider(0.01, max(2.0, args.temperature), value=args.temperature, label="temperature")
            top_p = gr.Slider(0.01, 1.0, value=args.top_p, label="top_p")
            max_new = gr.Slider(1, max(1024, args.max_new_tokens), value=args.max_new_tokens, step=1,
                                label="max_new_tokens")  # fmt: skip
            history_turns = gr.Slider(0, max(10, args.history_turns), value=args.history_turns, step=1,
                                      label="history_turns (0: single-turn)")  # fmt: skip
        clear = gr.Button("Clear conversation")
        inputs = [box, turns, do_sample, temperature, top_p, max_new, history_turns] + ([choice] if choices else [])
        box.submit(respond, inputs, [chatbot, turns, box])
        send.click(respond, inputs, [chatbot, turns, box])
        clear.click(lambda: ([], []), None, [chatbot, turns])
        chatbot.clear(lambda: [], None, turns)  # the chat box's own bin icon
    demo.queue(default_concurrency_limit=1)  # one model, one generation at a time
    try:
        demo.launch(server_name=args.host, server_port=args.port, ssr_mode=False, prevent_thread_lock=True,
                    quiet=True, footer_links=[])  # fmt: skip
    except OSError as exc:
        raise UserError(f"--web could not start on {args.host}:{args.port}: {first_line(exc)}") from exc
    print(f"chat page: http://{args.host}:{args.port}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
    demo.block_thread()
