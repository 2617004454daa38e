"""Training speed: the course's batch layout against the lessons' defaults, on the same rows, in one run.

    python bench.py                                # lesson 05 (LoRA), a small random BLOOM, real-length rows
    python bench.py --lessons 01 02 03 04 05       # every lesson
    python bench.py --generation                   # + generation tokens/s: base, LoRA, merged LoRA, batched
    python bench.py --memory /tmp/bloom-1b4-random # + peak RSS while loading the full-size architecture (~5 GB)

Each lesson trains twice, each time in its own process (so peak memory is its own), on the same rows for the
same number of samples at the lesson's learning rate: (a) the course's layout, batch 1 x accumulation 8 in
random order; (b) the lesson's defaults. Unknown flags go to both runs (e.g. --bf16 true on a GPU).
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.errors import UserError, run_cli
from common.lessons import LESSONS, ROOT, lesson_module
from common.models import REAL_CONFIG

COURSE_FLAGS = [
    "--per_device_train_batch_size",
    "1",
    "--gradient_accumulation_steps",
    "8",
    "--train_sampling_strategy",
    "random",
]
LAYOUT_FLAGS = (
    "--per_device_train_batch_size",
    "--gradient_accumulation_steps",
    "--train_sampling_strategy",
    "--group_by_length",
    "--max_steps",
    "--num_train_epochs",
)
EFFECTIVE_BATCH = 8
COURSE_ROWS = 26_858  # rows in older public copies of the course's alpaca_data_zh (its current one: 48,818)
ROW_TOKENS = (60, 250)  # most alpaca-zh rows under bloom-1b4-zh's tokenizer (measured for this project)
SMALL_MODEL = dict(hidden_size=256, n_layer=4, n_head=4)
PROMPTS = [
    "地球为什么有四季？",
    "用一句话解释什么是光合作用。",
    "写一首关于秋天的短诗。",
    "把“你好”翻译成英文。",
    "列出三种常见的水果。",
    "今天是星期二，17天后是星期几？",
    "解释一下什么是机器学习。",
    "给出一个健康早餐的建议。",
]
RESULT = "BENCH_RESULT "  # a worker's last stdout line carries its figures


# ---------------------------------------------------------------- rows


def real_length_rows(tokenizer, n_rows: int, sources: list[dict], seed: int) -> list[dict]:
    """Rows whose tokenised length is drawn uniformly from ROW_TOKENS, built from short source rows.

    Each row keeps one source row's instruction and input; its answer is that row's answer followed by the
    answers of the next source rows, cut at the last character that keeps the row within its drawn length.
    """
    from common.prompt import build_prompt

    def length(prompt: str, answer: str) -> int:  # as tokenize_dataset counts it: prompt + answer + EOS
        return len(tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]) + 1

    rng = random.Random(seed)
    rows = []
    for i in range(n_rows):
        target = rng.randint(*ROW_TOKENS)
        src = sources[i % len(sources)]
        prompt = build_prompt(src["instruction"], src.get("input") or "")
        answer, j = src["output"], i + 1
        while length(prompt, answer) < target:
            answer += "\n" + sources[j % len(sources)]["output"]
            j += 1
        lo, hi = 1, len(answer)  # the longest prefix of the answer that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if length(prompt, answer[:mid]) <= target else (lo, mid - 1)
        rows.append({"instruction": src["instruction"], "input": src.get("input") or "", "output": answer[:lo]})
    return rows


def write_rows(args, tokenizer, out_dir: Path) -> tuple[Path, Path, str]:
    """Train and held-out files, from disjoint source rows; and a one-line description of them."""
    from common.data import load_instruction_data

    source = args.dataset or str(ROOT / "data" / "alpaca_sample_zh.json")
    rows = load_instruction_data(source).shuffle(seed=args.seed).to_list()
    n_eval_sources = max(1, len(rows) // 8)
    eval_src, train_src = rows[:n_eval_sources], rows[n_eval_sources:]
    if args.dataset:  # real rows, as they are
        if len(train_src) < args.samples:
            raise UserError(f"--dataset {args.dataset}: {len(train_src)} training rows, --samples {args.samples}")
        train, held_out = train_src[: args.samples], eval_src[: args.eval_rows]
        what = f"rows of {args.dataset}"
    else:
        train = real_length_rows(tokenizer, args.samples, train_src, args.seed)
        held_out = real_length_rows(tokenizer, args.eval_rows, eval_src, args.seed + 1)
        what = (
            f"real-length rows ({ROW_TOKENS[0]}-{ROW_TOKENS[1]} tokens, uniform) built by joining answers of "
            f"data/alpaca_sample_zh.json (its own rows are 12-85 tokens), eval rows from other source rows"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, part in (("train.jsonl", train), ("eval.jsonl", held_out)):
        path = out_dir / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        files.append(path)
    return files[0], files[1], f"{len(train)} training rows and {len(held_out)} held-out rows: {what}"


# ---------------------------------------------------------------- one training run (in its own process)


def train_worker(spec: dict) -> None:
    """Run a lesson's own main() with its collator counting real and padded tokens of the training batches."""
    train = lesson_module(spec["folder"], "train")
    counts, training = {"real": 0, "padded": 0}, [True]
    make_collator, finish_training = train.make_collator, train.finish_training

    def counting_collator(tokenizer):
        collate = make_collator(tokenizer)

        def call(features):
            batch = collate(features)
            if training[0]:
                counts["real"] += int(batch["attention_mask"].sum())
                counts["padded"] += batch["attention_mask"].numel()
            return batch

        return call

    def finish_then_stop_counting(trainer, result, eval_dataset=None):
        training[0] = False  # eval batches come next
        return finish_training(trainer, result, eval_dataset)

    train.make_collator, train.finish_training = counting_collator, finish_then_stop_counting
    trainer = train.main(spec["argv"])
    metrics = json.loads((Path(trainer.args.output_dir) / "all_results.json").read_text())
    gpu = "peak_gpu_memory_mb" in metrics
    print(
        RESULT
        + json.dumps(
            {
                "samples_per_s": metrics["train_samples_per_second"],
                "tokens_per_s": metrics["train_tokens_per_second"],
                "padding_efficiency": counts["real"] / counts["padded"],
                "eval_loss": metrics["eval_loss"],
                "peak_mb": metrics["peak_gpu_memory_mb"] if gpu else metrics["peak_rss_mb"],
                "memory_kind": "GPU max allocated" if gpu else "CPU peak RSS",
                "learning_rate": trainer.args.learning_rate,
                "batch": trainer.args.per_device_train_batch_size,
                "accumulation": trainer.args.gradient_accumulation_steps,
                "order": trainer.args.train_sampling_strategy,
                "bf16": trainer.args.bf16,
            }
        ),
        flush=True,
    )


def run_worker(kind: str, spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        tail = "".join((proc.stdout + proc.stderr).splitlines(keepends=True)[-20:])
        raise UserError(f"the {kind} worker failed (exit {proc.returncode}); last output:\n{tail}")
    return json.loads(lines[-1][len(RESULT) :])


def bench_lesson(lesson: str, args, model: str, train_file: Path, eval_file: Path, work: Path, extra) -> list:
    folder = LESSONS[lesson]
    common = [
        "--model_name_or_path",
        model,
        "--dataset",
        str(train_file),
        "--eval_dataset",
        str(eval_file),
        "--max_steps",
        str(args.samples // EFFECTIVE_BATCH),
        "--save_strategy",
        "no",
        "--logging_steps",
        "1000",
        "--disable_tqdm",
        "true",
        "--report_to",
        "none",
        "--seed",
        str(args.seed),
        *extra,
    ]
    results = []
    for name, flags in (("a", COURSE_FLAGS), ("b", [])):
        print(f"[bench] {folder}: run ({name}) ...", file=sys.stderr, flush=True)
        argv = [*common, *flags, "--output_dir", str(work / folder / name)]
        results.append(run_worker("train", {"folder": folder, "argv": argv}))
    return results


def order_efficiency(n_rows: int, seed: int) -> dict:
    """Padding efficiency of each batch order alone (no training), for n_rows lengths drawn like the bench rows.

    The Trainer sorts rows by length within groups of up to 50 batches, but makes at least 4 groups, so a
    small data set gets small groups and more padding than the course's 26,858 rows would.
    """
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    rng = random.Random(seed)
    lengths = [rng.randint(*ROW_TOKENS) for _ in range(n_rows)]
    generator = torch.Generator().manual_seed(seed)
    orders = {
        "random": torch.randperm(n_rows, generator=generator).tolist(),
        "group_by_length": get_length_grouped_indices(lengths, EFFECTIVE_BATCH, generator=generator),
    }
    figures = {}
    for name, order in orders.items():
        batches = [[lengths[i] for i in order[k : k + EFFECTIVE_BATCH]] for k in range(0, n_rows, EFFECTIVE_BATCH)]
        figures[name] = sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)
    return figures


def print_training(folder: str, results: list) -> None:
    a, b = results
    print(f"\n{folder} (learning rate {a['learning_rate']:g} in both runs; peak memory = {a['memory_kind']})")
    print(f"{'run':<48} {'samples/s':>9} {'tokens/s':>9} {'pad eff.':>8} {'peak MB':>8} {'eval loss':>9}")
    for name, r in zip("ab", results):
        label = "course" if name == "a" else "defaults"
        layout = f"({name}) {label}: batch {r['batch']} x accum {r['accumulation']}, {r['order']}"
        print(
            f"{layout:<48} {r['samples_per_s']:>9.3f} {r['tokens_per_s']:>9.1f} {r['padding_efficiency']:>8.3f} "
            f"{r['peak_mb']:>8.0f} {r['eval_loss']:>9.4f}"
        )
    change = 100 * (b["eval_loss"] - a["eval_loss"]) / a["eval_loss"]
    print(
        f"speed ratio (b)/(a): {b['samples_per_s'] / a['samples_per_s']:.2f}x samples/s; "
        f"eval loss (b) vs (a): {change:+.2f}%"
    )


# ---------------------------------------------------------------- generation and memory


def _rss_mb() -> float:
    """Resident memory now, in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_worker(spec: dict) -> None:
    """Peak RSS of loading a model with load_base_model and then reading every weight once.

    transformers maps safetensors files into memory and reads pages only when a weight is first used, so RSS
    right after loading says little; reading each weight brings all of them in, as a first forward pass would.
    """
    import torch

    from common.metrics import peak_rss_mb
    from common.models import load_base_model

    before = _rss_mb()
    model = load_base_model(spec["model"])
    loaded = _rss_mb()
    with torch.no_grad():
        for p in model.parameters():
            p.sum()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(
        RESULT
        + json.dumps(
            {"before_mb": before, "loaded_mb": loaded, "peak_mb": peak_rss_mb(), "weight_bytes": weight_bytes}
        ),
        flush=True,
    )


def write_full_size_model(folder: Path, tokenizer_dir: Path) -> None:
    """bloom-1b4-zh's architecture with random weights, written one shard at a time (little memory)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BloomConfig, BloomForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BloomConfig(
        **REAL_CONFIG,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in BloomForCausalLM(config).state_dict().items() if k != "lm_head.weight"}
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    weight_map, shard, shard_bytes, total = {}, {}, 0, 0

    def flush() -> None:
        name = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
        save_file(shard, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        shard.clear()

    for key, shape in shapes.items():
        if key.endswith("layernorm.weight") or key.endswith("ln_f.weight"):
            tensor = torch.ones(shape)
        elif key.endswith("bias"):
            tensor = torch.zeros(shape)
        else:
            tensor = torch.empty(shape).normal_(0, config.initializer_range, generator=generator)
        shard[key] = tensor
        shard_bytes += tensor.numel() * 4
        total += tensor.numel() * 4
        if shard_bytes >= 2**29:
            flush()
            shard_bytes = 0
    if shard:
        flush()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def generation_worker(spec: dict) -> None:
    """Greedy tokens/s: bare base, LoRA (peft wrapper), merged LoRA, one prompt per call; base with batch 8."""
    import torch

    from common.generation import generate_answers, generation_kwargs
    from common.infer_args import InferArguments
    from common.models import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(spec["model"])
    model = load_base_model(spec["model"]).eval()
    n = spec["tokens"]
    # every answer exactly n tokens long, so each mode does the same work
    gen = {**generation_kwargs(InferArguments(max_new_tokens=n, do_sample=False), tokenizer), "min_new_tokens": n}

    def tokens_per_s(m, batch_size: int) -> tuple[float, list[str]]:
        generate_answers(m, tokenizer, PROMPTS[:1], {**gen, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
        start, answers = time.perf_counter(), []
        for i in range(0, len(PROMPTS), batch_size):
            answers += generate_answers(m, tokenizer, PROMPTS[i : i + batch_size], gen)
        return len(PROMPTS) * n / (time.perf_counter() - start), answers

    figures = {}
    figures["base"], single = tokens_per_s(model, 1)
    figures["base_batch8"], batched = tokens_per_s(model, 8)
    lora = lesson_module(LESSONS["05"], "train")
    model = lora.add_method(model, lora.ScriptArguments(), tokenizer)
    with torch.no_grad():  # a nonzero update, so merging really changes the weights
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01, generator=torch.Generator().manual_seed(0))
    model.eval()
    figures["lora"], _ = tokens_per_s(model, 1)
    figures["lora_merged"], _ = tokens_per_s(model.merge_and_unload(), 1)
    figures["batched_same_answers"] = single == batched
    print(RESULT + json.dumps(figures), flush=True)


def print_generation(model_label: str, tokens: int, g: dict) -> None:
    print(
        f"\ngeneration: {model_label}; greedy, {len(PROMPTS)} prompts, {tokens} new tokens each; "
        "LoRA = lesson 05's default adapter with random nonzero B"
    )
    print(f"{'mode':<46} {'tokens/s':>9} {'ratio':>7}")
    for key, label, ref in (
        ("base", "bare base model, one prompt per call", "base"),
        ("lora", "LoRA (peft wrapper), one prompt per call", "base"),
        ("lora_merged", "merged LoRA, one prompt per call", "base"),
        ("base_batch8", "bare base, batch 8 (the --input_file path)", "base"),
    ):
        print(f"{label:<46} {g[key]:>9.1f} {g[key] / g[ref]:>6.2f}x")
    print(f"batch 8 gives the same greedy answers as one prompt per call: {g['batched_same_answers']}")


def print_memory(folder: Path, m: dict) -> None:
    weights_mb = m["weight_bytes"] / 2**20
    print(
        f"\nmemory: the full-size bloom-1b4-zh architecture (random fp32 weights in {folder}), loaded with "
        "common.models.load_base_model, then every weight read once"
    )
    print(
        f"weights {weights_mb:,.0f} MB; RSS before loading {m['before_mb']:,.0f} MB, right after loading "
        f"{m['loaded_mb']:,.0f} MB (weights are memory-mapped, read on first use), peak {m['peak_mb']:,.0f} MB"
    )
    print(
        f"peak RSS / weight bytes: {m['peak_mb'] / weights_mb:.2f}x; "
        f"(peak - before) / weight bytes: {(m['peak_mb'] - m['before_mb']) / weights_mb:.2f}x"
    )


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model_name_or_path",
        default=None,
        help="model to train (default: a small random BLOOM built here, hidden 256, 4 layers)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="train on these rows as they are (default: real-length rows built from the sample data)",
    )
    parser.add_argument("--lessons", nargs="+", choices=list(LESSONS), default=["05"])
    parser.add_argument("--samples", type=int, default=96, help="training rows (one epoch) per run")
    parser.add_argument("--eval_rows", type=int, default=32, help="held-out rows for the eval loss")
    parser.add_argument("--generation", action="store_true", help="also measure generation tokens/s")
    parser.add_argument("--gen_tokens", type=int, default=32, help="new tokens per answer with --generation")
    parser.add_argument(
        "--memory",
        metavar="DIR",
        default=None,
        help="write the full-size architecture with random weights to DIR (once, ~5 GB), measure "
        "peak RSS while loading it",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args(argv)
    if args.worker:
        kind, spec = args.worker
        {"train": train_worker, "memory": memory_worker, "generation": generation_worker}[kind](json.loads(spec))
        return
    clash = [f for f in extra if f.split("=")[0] in LAYOUT_FLAGS]
    if clash:
        raise UserError(f"{clash[0]} is set by the benchmark itself (it compares batch layouts); drop it")
    if args.samples < EFFECTIVE_BATCH or args.samples % EFFECTIVE_BATCH:
        raise UserError(f"--samples must be a positive multiple of {EFFECTIVE_BATCH}")

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(args.output_dir or tmp)
        import torch

        from common.models import load_tokenizer
        from common.tiny_model import build_tiny_model

        model, model_label = args.model_name_or_path, args.model_name_or_path
        if model is None:
            model = str(build_tiny_model(work / "small-bloom", **SMALL_MODEL))
            model_label = "small random BLOOM (hidden 256, 4 layers, 4 heads, vocab 2000; repo's tiny tokenizer)"
        tokenizer = load_tokenizer(model)
        train_file, eval_file, data_label = write_rows(args, tokenizer, work / "data")
        device = (
            f"GPU ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
        )
        print(f"bench: {device}, torch threads {torch.get_num_threads()}; model {model_label}")
        print(
            f"data: {data_label}; {args.samples} samples per run = {args.samples // EFFECTIVE_BATCH} optimizer steps "
            f"of {EFFECTIVE_BATCH}; extra flags for both runs: {' '.join(extra) or 'none'}"
        )
        if not args.dataset:
            for n in (args.samples, COURSE_ROWS):
                eff = order_efficiency(n, args.seed)
                print(
                    f"padding efficiency of batches of {EFFECTIVE_BATCH} on {n:,d} rows of {ROW_TOKENS[0]}-"
                    f"{ROW_TOKENS[1]} tokens (batch order only, no training): random {eff['random']:.3f}, "
                    f"group_by_length {eff['group_by_length']:.3f}"
                )
        for lesson in args.lessons:
            results = bench_lesson(lesson, args, model, train_file, eval_file, work, extra)
            print_training(LESSONS[lesson], results)
        if args.memory:
            folder = Path(args.memory)
            if not (folder / "model.safetensors.index.json").is_file():
                print(f"[bench] writing the full-size architecture to {folder} ...", file=sys.stderr, flush=True)
                write_full_size_model(folder, Path(model))
            print_memory(folder, run_worker("memory", {"model": str(folder)}))
        if args.generation:
            print(f"[bench] generation on {model} ...", file=sys.stderr, flush=True)
            figures = run_worker("generation", {"model": model, "tokens": args.gen_tokens})
            print_generation(model_label, args.gen_tokens, figures)
    print(f"\nbench took {time.time() - started:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
