"""infer.py's command line, the same for every lesson."""

from dataclasses import dataclass, field

from .errors import DEBUG_EPILOG, UserError
from .models import DTYPES


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
    dtype: str = field(
        default="float32", metadata={"help": "dtype to load the base model in.", "choices": list(DTYPES)}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with the model repo."})


def parse_infer_args(argv: list[str] | None, description: str, arguments: type = InferArguments) -> InferArguments:
    """infer.py's flags, checked; for --web the port and gradio too, before a model is loaded for minutes.
    `arguments`: InferArguments or a subclass with a lesson's own flags (lesson 07's several adapters)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(arguments, description=description, epilog=DEBUG_EPILOG)
    args, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        raise UserError(f"unrecognized arguments: {' '.join(unknown)} (--help lists the flags of infer.py)")
    modes = [flag for flag, on in (("--prompt", args.prompt is not None), ("--input_file", args.input_file is not None),
                                   ("--web", args.web), ("--merge_to", args.merge_to is not None)) if on]  # fmt: skip
    if len(modes) > 1:
        raise UserError(f"pass only one of {', '.join(modes)}")
    for flag, value in (("--max_new_tokens", args.max_new_tokens), ("--batch_size", args.batch_size)):
        if value < 1:
            raise UserError(f"{flag} must be 1 or more, not {value}")
    if args.history_turns < 0:
        raise UserError(f"--history_turns must be 0 or more, not {args.history_turns}")
    if args.do_sample and not (args.temperature > 0 and 0 < args.top_p <= 1):
        raise UserError(f"sampling needs --temperature above 0 and --top_p in (0, 1], not {args.temperature} and "
                        f"{args.top_p}")  # fmt: skip
    if args.web:
        from .web import check_port_free, import_gradio

        check_port_free(args.host, args.port)  # first: gradio takes seconds to import
        import_gradio()
    return args
