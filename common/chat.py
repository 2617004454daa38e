"""Everything infer.py does after the model is loaded: arguments, generation, the three chat modes."""

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from .errors import UserError, first_line
from .prompt import build_prompt
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
    merge_to: str | None = field(
        default=None, metadata={"help": "Write the base model with the adapter merged in to this folder, and exit."}
    )
    dtype: str = field(default="float32", metadata={"help": "dtype to load the base model in."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with the model repo."})


def parse_infer_args(argv, description: str) -> InferArguments:
    parser = HfArgumentParser(InferArguments, description=description)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    if args.prompt is not None and args.input_file is not None:
        raise UserError("pass either --prompt or --input_file, not both")
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


@torch.no_grad()
def generate_answers(model, tokenizer, instructions: list[str], gen_kwargs: dict, streamer=None) -> list[str]:
    """Answer a batch of instructions in one left-padded generate() call."""
    check_generation_support(model)
    prompts = [build_prompt(text) for text in instructions]
    tokenizer.padding_side = "left"  # the answer must start right after every prompt
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    batch = batch.to(model.device)
    out = model.generate(**batch, **gen_kwargs, streamer=streamer)
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new_tokens]


def run_modes(args: InferArguments, model, tokenizer) -> None:
    """--prompt: one answer on stdout; --input_file: JSON lines; otherwise an interactive streaming chat."""
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
    else:
        chat_loop(model, tokenizer, gen_kwargs)


def chat_loop(model, tokenizer, gen_kwargs: dict) -> None:
    """Each turn is answered on its own (the course's prompt format has no history); tokens stream as made."""
    from transformers import TextStreamer

    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    print("Chat with the model. Empty line or Ctrl-D to quit.", file=sys.stderr)
    while True:
        try:
            text = input("Human: ").strip()
        except EOFError:
            break
        if not text:
            break
        print("Assistant: ", end="", flush=True)
        generate_answers(model, tokenizer, [text], gen_kwargs, streamer=streamer)


def save_merged(model, tokenizer, out_dir: str) -> None:
    """Save a plain transformers model (no peft needed to load it) plus the tokenizer."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--merge_to {out} exists and is not an empty folder")
    inp, outp = model.get_input_embeddings(), model.get_output_embeddings()
    if getattr(model.config, "tie_word_embeddings", False) and outp is not None and inp.weight is not outp.weight:
        # the method trained the input embeddings only; saving as tied would overwrite lm_head with them
        model.config.tie_word_embeddings = False
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"merged model written to {out}", file=sys.stderr)
