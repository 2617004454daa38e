"""Everything infer.py does after the model is loaded: arguments, generation, the chat modes, the web page."""

import dataclasses
import json
import os
import socket
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from .errors import UserError, first_line
from .prompt import build_chat_prompt, build_prompt
from .training import FINAL_SUBDIR

# What each lesson saves, so an adapter given to the wrong infer.py can say which lesson made it.
LESSON_OF_METHOD = {
    "BITFIT": "01-chatbot_bitfit",
    "PROMPT_TUNING": "02-chatbot_prompt_tuning",
    "P_TUNING": "03-chatbot_p_tuning",
    "PREFIX_TUNING": "04-chatbot_prefix_tuning",
    "LORA": "05-chatbot_lora",
}
BITFIT_INFO = "bitfit.json"


@dataclass
class InferArguments:
    adapter: str | None = field(
        default=None,
        metadata={"help": "Trained adapter folder, or a train.py output folder (default: this lesson's output)."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base model; default: the one recorded in the adapter."}
    )
    prompt: str | None = field(default=None, metadata={"help": "Answer this one instruction on stdout and exit."})
    input_file: str | None = field(
        default=None, metadata={"help": "Text file, one instruction per line; writes JSON lines to stdout."}
    )
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate() call with --input_file."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer in tokens."})
    do_sample: bool = field(default=True, metadata={"help": "Sample; `--do_sample false` decodes greedily."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling threshold."})
    history_turns: int = field(
        default=3,
        metadata={
            "help": "Earlier turns the chat and the web page put into the prompt (0: every question on its "
            "own); the oldest are dropped first when the prompt would not fit the model."
        },
    )
    web: bool = field(
        default=False, metadata={"help": "Serve the chat as a local web page (pip install -r requirements-web.txt)."}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address for --web; 0.0.0.0 opens it to your network."})
    port: int = field(default=7860, metadata={"help": "Port for --web."})
    merge_to: str | None = field(
        default=None, metadata={"help": "Write the base model with the adapter merged in to this folder, and exit."}
    )
    dtype: str = field(default="float32", metadata={"help": "dtype to load the base model in."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with the model repo."})


def parse_infer_args(argv, description: str) -> InferArguments:
    parser = HfArgumentParser(
        InferArguments,
        description=description,
        epilog="A bare --debug shows the full traceback of an error (or set PEFT_COURSE_DEBUG=1).",
    )
    args, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        raise UserError(f"unrecognized arguments: {' '.join(unknown)} (--help lists the flags of infer.py)")
    modes = [flag for flag, on in (("--prompt", args.prompt is not None), ("--input_file", args.input_file is not None),
                                   ("--web", args.web), ("--merge_to", args.merge_to is not None)) if on]  # fmt: skip
    if len(modes) > 1:
        raise UserError(f"pass only one of {', '.join(modes)}")
    if args.history_turns < 0:
        raise UserError("--history_turns must be 0 or more")
    if args.web:
        import_gradio()
        check_port_free(args.host, args.port)  # before loading a model for minutes
    return args


def artifact_method(folder: Path) -> str | None:
    """Which method saved this folder: a peft type such as 'LORA', 'BITFIT', or None."""
    if (folder / BITFIT_INFO).is_file():
        return "BITFIT"
    config = folder / "adapter_config.json"
    if config.is_file():
        return str(json.loads(config.read_text(encoding="utf-8")).get("peft_type"))
    return None


def resolve_adapter(adapter: str | None, lesson_dir: Path, method: str) -> Path:
    """Find the trained artifact and check that this lesson made it; clear errors otherwise."""
    folder = Path(adapter) if adapter else lesson_dir / "output"
    if (folder / FINAL_SUBDIR).is_dir():
        folder = folder / FINAL_SUBDIR
    found = artifact_method(folder) if folder.is_dir() else None
    if found is None:
        raise UserError(
            f"no trained adapter in {folder}; train one first: python {lesson_dir.name}/train.py "
            f"(or pass --adapter DIR)"
        )
    if found != method:
        lesson = LESSON_OF_METHOD.get(found, "another tool")
        raise UserError(
            f"{folder} holds a {found} adapter, made by {lesson}; use python {lesson}/infer.py --adapter {folder}"
        )
    return folder


def artifact_base(folder: Path) -> str:
    """The base model an artifact was trained on, as recorded at save time."""
    name = BITFIT_INFO if (folder / BITFIT_INFO).is_file() else "adapter_config.json"
    return json.loads((folder / name).read_text(encoding="utf-8"))["base_model_name_or_path"]


def load_base_for(folder: Path, model_name_or_path: str | None, dtype: str, trust_remote_code: bool):
    """Tokenizer saved with the artifact, and the base model it names (unless the user names another)."""
    from .training import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(str(folder), trust_remote_code)
    model = load_base_model(model_name_or_path or artifact_base(folder), dtype, trust_remote_code)
    return tokenizer, model


@contextmanager
def explain_mismatch(folder: Path, model):
    """Turn a shape/key mismatch while loading an artifact into 'trained on another base model'."""
    try:
        _check_dimensions(folder, model)
        yield
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(
            f"{folder} does not fit the base model {model.config._name_or_path}: it was trained on "
            f"{artifact_base(folder)} ({type(exc).__name__}: {first_line(exc, 160)})"
        ) from exc


def _check_dimensions(folder: Path, model) -> None:
    """Prompt-learning adapters load into any base model without complaint and fail only when generating."""
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        return
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    for key, attr in (("token_dim", "hidden_size"), ("num_layers", "num_hidden_layers")):
        if saved.get(key) is not None and saved[key] != getattr(model.config, attr, saved[key]):
            raise ValueError(f"adapter {key} = {saved[key]}, model {attr} = {getattr(model.config, attr)}")


def generation_kwargs(args: InferArguments, tokenizer) -> dict:
    kwargs = {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": args.do_sample,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if args.do_sample:
        kwargs.update(temperature=args.temperature, top_p=args.top_p)
    return kwargs


def check_generation_support(model) -> None:
    """Refuse a library pair known to make generate() silently wrong for prompt-learning adapters.

    transformers 5.24 passes the generation cache as `cache`; peft up to 0.21.2 reads `past_key_values`, so
    virtual tokens are re-injected at every step (prompt tuning, P-tuning) or dropped (prefix tuning).
    """
    import peft
    import transformers
    from packaging.version import Version

    config = getattr(model, "active_peft_config", None)
    if (
        config is not None
        and config.is_prompt_learning
        and Version(transformers.__version__) >= Version("5.24.0")
        and Version(peft.__version__) <= Version("0.21.2")
    ):
        raise UserError(
            f"transformers {transformers.__version__} with peft {peft.__version__} generates wrong answers for "
            f"{config.peft_type.value} adapters; install the tested pair: pip install -r requirements.txt"
        )


def generate_answers(model, tokenizer, instructions: list[str], gen_kwargs: dict, streamer=None) -> list[str]:
    """Answer a batch of instructions in one left-padded generate() call."""
    return generate_from_prompts(model, tokenizer, [build_prompt(text) for text in instructions], gen_kwargs, streamer)


@torch.no_grad()
def generate_from_prompts(model, tokenizer, prompts: list[str], gen_kwargs: dict, streamer=None) -> list[str]:
    check_generation_support(model)
    tokenizer.padding_side = "left"  # the answer must start right after every prompt
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    batch = batch.to(model.device)
    out = model.generate(**batch, **gen_kwargs, streamer=streamer)
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new_tokens]


# BLOOM's pretraining sequence length: its config records no limit (ALiBi positions have none)
FALLBACK_CONTEXT = 2048


def prompt_budget(model, tokenizer, max_new_tokens: int) -> int:
    """Tokens a prompt may take: the model's context less the answer and any virtual tokens of the adapter."""
    config = model.config
    limits = [getattr(config, name, None) for name in ("max_position_embeddings", "n_positions", "seq_length")]
    limit = next((n for n in limits if isinstance(n, int)), None)
    if limit is None and tokenizer.model_max_length < 10**6:  # tokenizers without a limit report 1e30
        limit = tokenizer.model_max_length
    peft_config = getattr(model, "active_peft_config", None)
    virtual = peft_config.num_virtual_tokens if peft_config is not None and peft_config.is_prompt_learning else 0
    return (limit or FALLBACK_CONTEXT) - max_new_tokens - virtual


def conversation_prompt(tokenizer, history: list, message: str, max_turns: int, budget: int) -> tuple[str, int]:
    """The prompt for `message` with up to `max_turns` earlier (question, answer) turns in the training format;
    the oldest turns go first while the prompt is longer than `budget` tokens. Returns it and the turns kept."""
    turns = list(history[-max_turns:]) if max_turns > 0 else []
    while True:
        prompt = build_chat_prompt(turns, message, tokenizer.eos_token)
        if not turns or len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= budget:
            return prompt, len(turns)
        turns.pop(0)


def answer_turn(model, tokenizer, history: list, message: str, gen_kwargs: dict, max_turns: int, streamer=None):
    """One chat turn: the answer to `message`, given the conversation so far."""
    budget = prompt_budget(model, tokenizer, gen_kwargs["max_new_tokens"])
    prompt, kept = conversation_prompt(tokenizer, history, message, max_turns, budget)
    wanted = min(len(history), max_turns)
    if kept < wanted:
        print(f"[history] dropped the {wanted - kept} oldest turn(s) to fit {budget} prompt tokens",
              file=sys.stderr, flush=True)  # fmt: skip
    return generate_from_prompts(model, tokenizer, [prompt], gen_kwargs, streamer)[0]


def run_modes(args: InferArguments, model, tokenizer, lesson_dir: Path, method: str) -> None:
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
        folder = resolve_adapter(args.adapter, lesson_dir, method)
        base = args.model_name_or_path or artifact_base(folder)
        about = f"**{lesson_dir.name}** · method `{method}` · adapter `{folder}` · base model `{base}`"
        serve_web(args, model, tokenizer, title=f"{lesson_dir.name} chat", about=about)
    else:
        chat_loop(model, tokenizer, gen_kwargs, args.history_turns)


def chat_loop(model, tokenizer, gen_kwargs: dict, max_turns: int) -> None:
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


# ---------------------------------------------------------------- the web page (gradio, imported only for --web)


def import_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # its analytics thread fails offline
    try:
        import gradio
    except ImportError as exc:
        raise UserError(f"--web needs gradio ({exc}); install it with: pip install -r requirements-web.txt") from exc
    return gradio


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"--web cannot listen on {host}:{port} ({exc.strerror or exc}); "
                            f"pass another --port or --host") from exc  # fmt: skip


def stream_turn(model, tokenizer, history: list, message: str, gen_kwargs: dict, max_turns: int):
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


def serve_web(args: InferArguments, model, tokenizer, title: str, about: str) -> None:
    """A local chat page: streamed answers, the CLI's sampling controls, the conversation kept in the prompt."""
    gr = import_gradio()

    def as_messages(turns):
        return [{"role": role, "content": text} for q, a in turns for role, text in (("user", q), ("assistant", a))]

    def respond(message, turns, do_sample, temperature, top_p, max_new_tokens, history_turns):
        message = message.strip()
        if not message:
            yield as_messages(turns), turns, ""
            return
        settings = dataclasses.replace(args, do_sample=do_sample, temperature=temperature, top_p=top_p,
                                       max_new_tokens=int(max_new_tokens))  # fmt: skip
        gen_kwargs = generation_kwargs(settings, tokenizer)
        try:
            for shown in stream_turn(model, tokenizer, turns, message, gen_kwargs, int(history_turns)):
                yield as_messages(turns + [(message, shown)]), turns, ""
        except UserError as exc:
            raise gr.Error(str(exc)) from exc
        turns = turns + [(message, shown)]
        yield as_messages(turns), turns, ""

    with gr.Blocks(title=title) as demo:
        gr.Markdown(about)
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
        inputs = [box, turns, do_sample, temperature, top_p, max_new, history_turns]
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


# ---------------------------------------------------------------- merging


def save_merged(model, tokenizer, out_dir: str, gen_kwargs: dict) -> None:
    """Save a plain transformers model (no peft needed to load it) plus the tokenizer with its chat template.

    generation_config.json gets infer.py's settings (EOS, pad, sampling, answer length), so `pipeline(...)` and
    `generate()` on the merged folder stop and sample as infer.py does.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--merge_to {out} exists and is not an empty folder")
    inp, outp = model.get_input_embeddings(), model.get_output_embeddings()
    if getattr(model.config, "tie_word_embeddings", False) and outp is not None and inp.weight is not outp.weight:
        # the method trained the input embeddings only; saving as tied would overwrite lm_head with them
        model.config.tie_word_embeddings = False
    model.generation_config.update(**gen_kwargs)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"merged model written to {out}", file=sys.stderr)
