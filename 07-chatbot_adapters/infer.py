"""Lesson 07 - several LoRA adapters on one base model: answer with any one of them, or mix them row by row.

python 07-chatbot_adapters/infer.py --adapter short=DIR --adapter sentence=DIR --input_file rows.jsonl
python 07-chatbot_adapters/infer.py --adapter short=DIR --adapter sentence=DIR --use sentence --prompt "..."
python 07-chatbot_adapters/infer.py --adapter short=DIR --use base        # terminal chat with the bare base
python 07-chatbot_adapters/infer.py --adapter short=DIR --adapter sentence=DIR --web   # pick one on the page

Each --input_file row is a JSON object with `instruction` (and optionally `input`) and `adapter`: a NAME given
with --adapter, or `base` for the bare model. Rows are answered in input order, --batch_size rows per generate()
call, each row by its own adapter (peft's `adapter_names`); one JSON line per row.
"""

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

from common.artifacts import artifact_base, artifact_method, explain_mismatch, load_base_for, resolve_adapter
from common.chat import chat_loop
from common.course_template import user_message
from common.errors import UserError, run_cli
from common.generation import generate_answers, generation_kwargs
from common.infer_args import InferArguments, parse_infer_args
from common.lessons import LESSON_OF_METHOD, LESSONS, ROOT

METHOD = "LORA"  # the only adapters that can share a batch here; lesson 05 trains them
LORA_DIR = ROOT / LESSONS[LESSON_OF_METHOD[METHOD]]
BASE = "base"  # the bare base model, in --use and in a row's `adapter`
PEFT_BASE = "__base__"  # peft's name for the bare base model in `adapter_names`
NAME = re.compile(r"[A-Za-z0-9_-]+")  # peft keeps adapters in ModuleDicts: a dot would break the module path
PROMPT_LEARNING = {"PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING"}
EXAMPLE = "--adapter short=07-chatbot_adapters/output-short"


@dataclass
class AdapterArguments(InferArguments):
    adapter: list[str] | None = field(
        default=None,
        metadata={
            "help": "NAME=PATH of a LoRA adapter (a lesson-05 train.py output folder or its adapter/ folder); "
            "repeat it, or give several after one flag. All must be made for the same base model.",
            "action": "append",
        },
    )
    use: str | None = field(
        default=None,
        metadata={
            "help": "The adapter --prompt, the chat and --web start with: a NAME, or base for the bare "
            "model. Default: the first --adapter."
        },  # fmt: skip
    )
    input_file: str | None = field(
        default=None,
        metadata={
            "help": 'JSON lines, one row each: {"instruction": ..., "input": ... (optional), '
            '"adapter": NAME or base}; writes one JSON line per row (prompt, adapter, response) in input '
            "order."
        },  # fmt: skip
    )


def parse_adapters(items: list[list[str]] | None) -> dict[str, Path]:
    """NAME -> adapter folder, each checked: NAME=PATH, a unique name, a LoRA adapter, one base for all."""
    if not items:
        raise UserError(f"pass at least one --adapter NAME=PATH, e.g. {EXAMPLE}")
    adapters = {}
    for item in (i for group in items for i in group):
        name, sep, path = item.partition("=")
        if not sep or not path or not NAME.fullmatch(name):
            raise UserError(f"--adapter {item!r}: expected NAME=PATH with a NAME of letters, digits, _ or -, e.g. "
                            f"{EXAMPLE}")  # fmt: skip
        if name in (BASE, PEFT_BASE):
            raise UserError(f"--adapter {item!r}: the name {name!r} is kept for the bare base model; pick another")
        if name in "lora_":  # peft 0.21.2 warns that such a name may reinitialise the adapter's weights on load
            raise UserError(f"--adapter {item!r}: peft cannot load an adapter whose name is part of 'lora_'; pick "
                            "a longer name")  # fmt: skip
        if name in adapters:
            raise UserError(f"--adapter {name!r} is given twice")
        adapters[name] = adapter_folder(name, Path(path))
    bases = {name: artifact_base(folder) for name, folder in adapters.items()}
    if len({same_path(b) for b in bases.values()}) > 1:
        made = ", ".join(f"{name} on {base}" for name, base in bases.items())
        raise UserError(f"the adapters were made for different base models ({made}); one generate() call runs one "
                        "base model, so give only adapters trained on the same one")  # fmt: skip
    saved = {name: saved_modules(folder) for name, folder in adapters.items()}
    if len(set(saved.values())) > 1:
        listed = ", ".join(f"{name}: {', '.join(sorted(mods)) or 'none'}" for name, mods in saved.items())
        raise UserError(f"the adapters train different full modules (modules_to_save: {listed}); peft 0.21.2 "
                        "cannot route a row through a module copy its adapter does not have, so load such an "
                        "adapter with the bare base only, or with adapters that save the same modules")  # fmt: skip
    formats = {name: prompt_format(folder) for name, folder in adapters.items()}
    if len(set(formats.values())) > 1:
        raise UserError(f"the adapters were trained in different prompt formats ({formats}); rows of one batch "
                        "share one tokenizer and prompt format")  # fmt: skip
    return adapters


def adapter_folder(name: str, path: Path) -> Path:
    """The LoRA adapter folder behind `path`; a prompt-learning or BitFit artifact is refused with the reason."""
    folder = path / "adapter" if (path / "adapter").is_dir() else path
    method = artifact_method(folder) if folder.is_dir() else None
    if method in PROMPT_LEARNING:
        raise UserError(
            f"--adapter {name}: {folder} holds a {method} adapter; prompt-learning adapters cannot share a batch "
            "with other rows (their virtual tokens lengthen the input, or prefix tuning's lengthen every layer's "
            f"KV cache), so only LoRA adapters mix here; answer its rows with python "
            f"{LESSONS[LESSON_OF_METHOD[method]]}/infer.py --adapter {folder}"
        )
    if method == "BITFIT":
        raise UserError(f"--adapter {name}: {folder} holds BitFit biases, which replace the base model's own, so "
                        f"no other row could use the bare base; use python {LESSONS['01']}/infer.py --adapter "
                        f"{folder}")  # fmt: skip
    try:
        return resolve_adapter(str(folder), LORA_DIR, METHOD)
    except UserError as exc:
        raise UserError(f"--adapter {name}: {str(exc).replace('--adapter DIR', '--adapter NAME=DIR')}") from exc


def same_path(base: str) -> str:
    return str(Path(base).resolve()) if Path(base).exists() else base


def saved_modules(folder: Path) -> frozenset[str]:
    """The modules an adapter trains in full (LoraConfig's modules_to_save)."""
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    return frozenset(config.get("modules_to_save") or [])


def prompt_format(folder: Path) -> str:
    config = folder / "tokenizer_config.json"
    saved = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    return saved.get("prompt_format") or "course"


def check_name(name: str, adapters: dict[str, Path], where: str) -> str:
    if name != BASE and name not in adapters:
        raise UserError(f"{where}: unknown adapter {name!r}; the adapters are {', '.join(adapters)} (or {BASE} for "
                        f"the bare model)")  # fmt: skip
    return name


def read_rows(path: Path, adapters: dict[str, Path]) -> list[dict]:
    """Every row of --input_file, checked before anything is loaded or written."""
    if not path.is_file():
        raise UserError(f"--input_file {path}: no such file")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"--input_file {path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) or not row["instruction"]:
            raise UserError(f'{where}: expected an object with a non-empty "instruction"')
        if not isinstance(row.get("input", ""), str):
            raise UserError(f'{where}: "input" must be a string')
        if not isinstance(row.get("adapter"), str):
            raise UserError(f'{where}: no "adapter" (one of {", ".join(adapters)}, or {BASE})')
        check_name(row["adapter"], adapters, where)
        rows.append({"prompt": user_message(row["instruction"], row.get("input", "")), "adapter": row["adapter"]})
    if not rows:
        raise UserError(f"--input_file {path} holds no rows (one JSON object per line)")
    return rows


def load_adapters(adapters: dict[str, Path], model_name_or_path=None, dtype="float32", trust_remote_code=False):
    """One base model holding every adapter under its NAME (peft's load_adapter); the first one is active."""
    from peft import PeftModel  # only now: flag and adapter errors come without loading torch

    names = list(adapters)
    tokenizer, base = load_base_for(adapters[names[0]], model_name_or_path, dtype, trust_remote_code)
    parts = {part for module_name, _ in base.named_modules() for part in module_name.split(".")}
    for name in names:
        if name in parts:  # peft 0.21.2 filters saved keys by ".<other adapter's name>."
            raise UserError(f"--adapter {name}: {name!r} is also a module name in the base model; peft then drops "
                            "that module's weights when it saves any other adapter; pick another name")  # fmt: skip
    with explain_mismatch(adapters[names[0]], base):
        model = PeftModel.from_pretrained(base, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        with explain_mismatch(adapters[name], base):
            model.load_adapter(adapters[name], adapter_name=name)
    return model.eval(), tokenizer


def route(names: list[str]) -> dict:
    """generate() arguments that send row i to adapter names[i] (`base`: the bare model), all in one call."""
    return {"adapter_names": [PEFT_BASE if name == BASE else name for name in names]}


def answer_rows(model, tokenizer, rows: list[dict], gen_kwargs: dict, batch_size: int) -> None:
    """Rows in input order, batch_size per generate() call whatever their adapters; one JSON line each."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        kwargs = {**gen_kwargs, **route([r["adapter"] for r in chunk])}
        for row, answer in zip(chunk, generate_answers(model, tokenizer, [r["prompt"] for r in chunk], kwargs)):
            print(json.dumps({**row, "response": answer}, ensure_ascii=False), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_infer_args(argv, __doc__, AdapterArguments)
    if args.merge_to:
        raise UserError(f"--merge_to merges one adapter into the base: python {LESSONS['05']}/infer.py --adapter "
                        "PATH --merge_to DIR")  # fmt: skip
    adapters = parse_adapters(args.adapter)
    use = check_name(args.use or next(iter(adapters)), adapters, "--use")
    rows = read_rows(Path(args.input_file), adapters) if args.input_file is not None else None
    model, tokenizer = load_adapters(adapters, args.model_name_or_path, args.dtype, args.trust_remote_code)
    gen_kwargs = generation_kwargs(args, tokenizer)
    if rows is not None:
        answer_rows(model, tokenizer, rows, gen_kwargs, args.batch_size)
    elif args.prompt is not None:
        print(generate_answers(model, tokenizer, [args.prompt], {**gen_kwargs, **route([use])})[0])
    elif args.web:
        from common.web import serve_web

        base = args.model_name_or_path or artifact_base(adapters[use if use != BASE else next(iter(adapters))])
        listed = " · ".join(f"`{name}` {folder}" for name, folder in adapters.items())
        about = f"**{LESSON_DIR.name}** · base model `{base}` · LoRA adapters: {listed} · `base`: the bare model"
        choices = {name: route([name]) for name in [*adapters, BASE]}
        serve_web(args, model, tokenizer, f"{LESSON_DIR.name} chat", about, choices=choices, chosen=use)
    else:
        print(f"[adapter] {use}", file=sys.stderr)
        chat_loop(model, tokenizer, {**gen_kwargs, **route([use])}, args.history_turns)


if __name__ == "__main__":
    run_cli(main)
