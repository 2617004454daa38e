"""Training speed on this machine: the lessons' default batch layout against the course's, alternated runs,
and how close each run gets to the machine's measured matrix-multiply limit.

    python bench.py                          # every lesson: course layout vs defaults, 3 alternated runs each
    python bench.py --lessons 05 --layouts   # lesson 05: every candidate layout, alternated
    python bench.py --precision              # one training step in fp32, bf16 and fp16 on this machine
    python bench.py --gpu-suite              # on one GPU: the full-size architecture in bf16, every lesson
    python bench.py --generation             # + generation tokens/s: base, LoRA, merged LoRA, batched
    python bench.py --memory /tmp/bloom-1b4-random   # + peak RSS while loading the full-size architecture

Every training run is its own process (its peak memory is its own; "whole process" times include importing
the libraries and loading the model) on the same rows for the same number of samples at the lesson's learning
rate. Runs being compared alternate (A B A B ...), so a change in the machine's load hits both alike; each
figure is the median of the repeats, with the lowest and highest in brackets, and the 1-minute load average
is printed before and after. A comparison made while other programs use the cores measures those programs:
run it on a quiet machine. Unknown flags go to every run (e.g. --bf16 true on a GPU).

Useful FLOPs (common/flops.py) count what a training step must compute, padding not counted; the limit is the
best FLOP/s `torch.mm` reaches at the model's weight shapes on this machine (common/gemm.py).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.errors import UserError, run_cli
from common.lessons import LESSONS, ROOT, lesson_module
from common.models import REAL_CONFIG
from common.train_args import ACCELERATOR_LAYOUT, COURSE_LAYOUT, CPU_LAYOUT, default_layout


def layout_flags(layout: dict) -> list[str]:
    return [x for key, value in layout.items() for x in (f"--{key}", str(value))]


def layout_label(layout: dict) -> str:
    return (
        f"batch {layout['per_device_train_batch_size']} x accum {layout['gradient_accumulation_steps']}, "
        f"{layout['train_sampling_strategy']}"
    )


def grouped(batch: int) -> dict:
    return dict(
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=EFFECTIVE_BATCH // batch,
        train_sampling_strategy="group_by_length",
    )


EFFECTIVE_BATCH = 8
# the layouts `--layouts` compares: the course's, and 8 rows per step as fewer, larger batches of similar length
CANDIDATE_LAYOUTS = {
    "course": COURSE_LAYOUT,
    "2x4 grouped": grouped(2),
    "4x2 grouped": grouped(4),
    "8x1 grouped": grouped(8),
    "8x1 random": {**grouped(8), "train_sampling_strategy": "random"},
}
LAYOUT_FLAGS = (
    "--per_device_train_batch_size",
    "--gradient_accumulation_steps",
    "--train_sampling_strategy",
    "--group_by_length",
    "--max_steps",
    "--num_train_epochs",
)
COURSE_ROWS = 26_858  # rows in older public copies of the course's alpaca_data_zh (its current one: 48,818)
ROW_TOKENS = (60, 250)  # most alpaca-zh rows under bloom-1b4-zh's tokenizer (measured for this project)
SMALL_MODEL = dict(hidden_size=256, n_layer=4, n_head=4)
GEMM_ROWS = (256, 2048)  # one row at the course's 256-token limit; a batch of 8 such rows
# dense bf16 tensor-core peak by device name (vendor data sheets), for MFU; the first match wins
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("H800", 989.4),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
)
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
    from common.course_template import build_prompt

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


def train_and_measure(folder: str, argv: list[str]) -> dict:
    """Run a lesson's own main(), its collator recording each training batch's real row lengths and time."""
    import torch

    from measure.flops import measure

    train = lesson_module(folder, "train")
    batches, training, finished = [], [True], []  # batches: (time collated, real row lengths, padded tokens)
    make_collator, finish_training = train.make_collator, train.finish_training

    def recording_collator(tokenizer):
        collate = make_collator(tokenizer)

        def call(features):
            batch = collate(features)
            if training[0]:
                mask = batch["attention_mask"]
                batches.append((time.perf_counter(), mask.sum(dim=1).tolist(), mask.numel()))
            return batch

        return call

    def finish_then_stop_recording(trainer, result, eval_dataset=None):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        finished.append(time.perf_counter())
        training[0] = False  # eval batches come next
        return finish_training(trainer, result, eval_dataset)

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # several runs may share this process (the GPU suite)
    train.make_collator, train.finish_training = recording_collator, finish_then_stop_recording
    try:
        trainer = train.main(argv)
    finally:
        train.make_collator, train.finish_training = make_collator, finish_training
    metrics = json.loads((Path(trainer.args.output_dir) / "all_results.json").read_text())
    with trainer.accelerator.autocast():  # the probe pass in the run's own precision (bf16 weights, fp32 biases)
        flops = measure(trainer.model)
    # steady state: from the second optimizer step on (the first one pays for allocations and kernel choice)
    accumulation = trainer.args.gradient_accumulation_steps
    steady = batches[accumulation:] if len(batches) > accumulation else batches
    steady_s = finished[0] - steady[0][0]
    steady_lengths = [n for _, lengths, _ in steady for n in lengths]
    real = sum(sum(lengths) for _, lengths, _ in batches)
    gpu = "peak_gpu_memory_mb" in metrics
    return {
        "samples_per_s": metrics["train_samples_per_second"],
        "tokens_per_s": metrics["train_tokens_per_second"],
        "train_s": metrics["train_runtime"],
        "steady_samples_per_s": len(steady_lengths) / steady_s,
        "steady_tokens_per_s": sum(steady_lengths) / steady_s,
        "flops_per_s": flops.rows(steady_lengths) / steady_s,
        "padding_efficiency": real / sum(padded for _, _, padded in batches),
        "eval_loss": metrics["eval_loss"],
        "peak_mb": metrics["peak_gpu_memory_mb"] if gpu else metrics["peak_rss_mb"],
        "memory_kind": "GPU max allocated" if gpu else "CPU peak RSS",
        "learning_rate": trainer.args.learning_rate,
        "batch": trainer.args.per_device_train_batch_size,
        "accumulation": accumulation,
        "order": trainer.args.train_sampling_strategy,
    }


def train_worker(spec: dict) -> None:
    print(RESULT + json.dumps(train_and_measure(spec["folder"], spec["argv"])), flush=True)


def suite_worker(spec: dict) -> None:
    """The GPU suite's runs, one after another in this process (a failed run is reported, the rest go on)."""
    import gc

    import torch

    results = []
    for run in spec["runs"]:
        try:
            results.append({**run, **train_and_measure(run["folder"], run["argv"])})
        except Exception as exc:  # one lesson's failure must not cost the rest of a rare GPU session
            results.append({**run, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(RESULT + json.dumps(results), flush=True)


def run_worker(kind: str, spec: dict) -> dict:
    """Run one worker process; its figures, plus the whole process's wall time."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(spec)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        tail = "".join((proc.stdout + proc.stderr).splitlines(keepends=True)[-20:])
        raise UserError(f"the {kind} worker failed (exit {proc.returncode}); last output:\n{tail}")
    figures = json.loads(lines[-1][len(RESULT) :])
    return {**figures, "process_s": wall} if isinstance(figures, dict) else {"runs": figures, "process_s": wall}


def alternated(names: list[str], repeats: int) -> list[str]:
    """The order of the runs: every variant once, then again (A B A B ...), so drift in the machine's load
    reaches every variant alike."""
    return [name for _ in range(repeats) for name in names]


def training_argv(args, model: str, train_file: Path, eval_file: Path, extra: list[str], steps: int) -> list[str]:
    return [
        "--model_name_or_path",
        model,
        "--dataset",
        str(train_file),
        "--eval_dataset",
        str(eval_file),
        "--max_steps",
        str(steps),
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


def run_alternated(lesson: str, layouts: dict[str, list[str]], argv: list[str], work: Path, repeats: int) -> dict:
    """name -> the figures of each repeat, the runs alternated."""
    folder = LESSONS[lesson]
    runs = {name: [] for name in layouts}
    order = alternated(list(layouts), repeats)
    for i, name in enumerate(order, 1):
        print(f"[bench] {folder}: {name} ({i}/{len(order)}) ...", file=sys.stderr, flush=True)
        out = work / folder / name.replace(" ", "_") / str(len(runs[name]))
        runs[name].append(
            run_worker("train", {"folder": folder, "argv": [*argv, *layouts[name], "--output_dir", str(out)]})
        )
    return runs


# ---------------------------------------------------------------- figures


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], fmt: str) -> str:
    """median [lowest-highest]"""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def load_line(when: str) -> tuple[str, bool]:
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    busy = load > cores
    return f"load average (1 min) {when}: {load:.2f} on {cores} cores", busy


def warn_if_busy(line: str, busy: bool) -> None:
    print(line)
    if busy:
        print(
            "warning: the load exceeds the core count; other programs share the cores, so these figures and "
            "their ratios measure that contention, not the layouts"
        )


def print_runs(folder: str, runs: dict[str, list[dict]], limit: float, reference: str = "course") -> None:
    repeats = next(iter(runs.values()))
    first, n = repeats[0], len(repeats)
    print(
        f"\n{folder} (learning rate {first['learning_rate']:g} in every run; median [lowest-highest] of {n} "
        f"alternated runs; peak memory = {first['memory_kind']})"
    )
    print(
        f"{'layout':<50} {'samples/s':>19} {'whole process s':>19} {'% of limit':>16} {'pad eff.':>8} "
        f"{'peak MB':>7} {'eval loss':>9}"
    )
    for name, results in runs.items():
        r = results[0]
        layout = {"per_device_train_batch_size": r["batch"], "gradient_accumulation_steps": r["accumulation"]}
        label = f"{name}: {layout_label({**layout, 'train_sampling_strategy': r['order']})}"
        print(
            f"{label:<50} {spread([x['samples_per_s'] for x in results], '.2f'):>19} "
            f"{spread([x['process_s'] for x in results], '.1f'):>19} "
            f"{spread([100 * x['flops_per_s'] / limit for x in results], '.1f'):>16} "
            f"{median([x['padding_efficiency'] for x in results]):>8.3f} "
            f"{median([x['peak_mb'] for x in results]):>7.0f} {median([x['eval_loss'] for x in results]):>9.4f}"
        )
    ref = runs[reference]
    for name, results in runs.items():
        if name == reference:
            continue
        speed = median([x["samples_per_s"] for x in results]) / median([x["samples_per_s"] for x in ref])
        whole = median([x["process_s"] for x in ref]) / median([x["process_s"] for x in results])
        loss = 100 * (median([x["eval_loss"] for x in results]) / median([x["eval_loss"] for x in ref]) - 1)
        print(
            f"{name} / {reference}: {speed:.2f}x training samples/s, {whole:.2f}x whole process, eval loss {loss:+.2f}%"
        )


def order_efficiency(n_rows: int, seed: int) -> dict:
    """Padding efficiency of each batch order alone (no training), for n_rows lengths drawn like the bench rows.

    The Trainer sorts rows by length within groups of up to 50 batches, but makes at least 4 groups, so a
    small data set gets small groups and more padding than the course's 26,858 rows would.
    """
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    rng = random.Random(seed)
    lengths = [rng.randint(*ROW_TOKENS) for _ in range(n_rows)]
    figures = {}
    for batch in (4, EFFECTIVE_BATCH):
        generator = torch.Generator().manual_seed(seed)
        orders = {
            "random": torch.randperm(n_rows, generator=generator).tolist(),
            "group_by_length": get_length_grouped_indices(lengths, batch, generator=generator),
        }
        for name, order in orders.items():
            batches = [[lengths[i] for i in order[k : k + batch]] for k in range(0, n_rows, batch)]
            figures[(batch, name)] = sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)
    return figures


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


def write_full_size_model(folder: Path, tokenizer, dtype=None) -> None:
    """bloom-1b4-zh's architecture with random weights (fp32 unless dtype says), written one shard at a time
    (little memory), with the given tokenizer (its vocabulary may be smaller than the model's)."""
    import torch
    from safetensors.torch import save_file
    from transformers import BloomConfig, BloomForCausalLM

    dtype = dtype or torch.float32
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
        shard[key] = tensor.to(dtype)
        shard_bytes += tensor.numel() * shard[key].element_size()
        total += tensor.numel() * shard[key].element_size()
        if shard_bytes >= 2**29:
            flush()
            shard_bytes = 0
    if shard:
        flush()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    config.dtype = str(dtype).removeprefix("torch.")
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


# ---------------------------------------------------------------- the machine's limit


def meta_model(model_dir: str):
    """The model's architecture on the meta device: its shapes, no weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))


def measure_limit(model_dir: str, dtype_name: str = "float32", device: str = "cpu", seconds: float = 0.3) -> float:
    """Print the matmul FLOP/s at the model's weight shapes; return the best (the run's limit)."""
    import torch

    from measure.gemm import gemm_table, weight_shapes

    dtype = getattr(torch, dtype_name)
    table = gemm_table(weight_shapes(meta_model(model_dir)), list(GEMM_ROWS), dtype, device, seconds)
    best = max(t["flops_per_s"] for t in table)
    print(f"\nmatmul limit ({dtype_name}, torch.mm on {device}, best of 3 timings at the model's weight shapes):")
    print("  " + "; ".join(f"{t['rows']}x{t['in']} @ {t['in']}x{t['out']} {t['flops_per_s'] / 1e9:.1f}" for t in table))
    print(f"  GFLOP/s; limit = the best: {best / 1e9:.1f} GFLOP/s")
    return best


def describe_machine() -> str:
    import platform

    import peft
    import torch
    import transformers

    from measure.gemm import cpu_features

    if torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}"
    else:
        features = cpu_features()
        flags = ", ".join(f for f, present in features.items() if present) or "unknown"
        device = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, flags: {flags}"
    return (
        f"{device}; torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}, peft {peft.__version__}"
    )


# ---------------------------------------------------------------- precision on this machine


def precision_worker(spec: dict) -> None:
    """One LoRA training step (forward, backward, AdamW) per precision mode, the modes alternated."""
    import torch

    from common.data import load_instruction_data, make_collator, tokenize_dataset
    from common.models import load_base_model, load_tokenizer

    lora = lesson_module(LESSONS["05"], "train")
    tokenizer = load_tokenizer(spec["model"])
    rows = tokenize_dataset(load_instruction_data(spec["data"]), tokenizer, 256)
    batch = make_collator(tokenizer)([rows[i] for i in range(CPU_LAYOUT["per_device_train_batch_size"])])
    modes = {
        "fp32": ("float32", None),
        "bf16 autocast (fp32 weights; --bf16 true)": ("float32", torch.bfloat16),
        "bf16 weights (--dtype bfloat16 --bf16 true)": ("bfloat16", torch.bfloat16),
        "fp16 autocast (fp32 weights; --fp16 true)": ("float32", torch.float16),
    }
    models = {}
    for name, (dtype, _) in modes.items():
        torch.manual_seed(0)
        model = lora.add_method(
            load_base_model(spec["model"], dtype), lora.ScriptArguments(lora_dropout=0.0), tokenizer
        )
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        models[name] = (model, optimizer)

    def step(name: str) -> float:
        model, optimizer = models[name]
        autocast = modes[name][1]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    times = {name: [] for name in modes}
    for i, name in enumerate(alternated(list(modes), spec["repeats"] + 1)):
        seconds = step(name)
        if i >= len(modes):  # the first round warms up
            times[name].append(seconds)
    print(RESULT + json.dumps({"times": times, "tokens": int(batch["attention_mask"].sum())}), flush=True)


def print_precision(model_label: str, figures: dict) -> None:
    import torch

    from measure.gemm import cpu_features, has_bf16_hardware, matmul_flops_per_s

    features = cpu_features()
    print(
        f"\nprecision: one LoRA training step (lesson 05), batch {CPU_LAYOUT['per_device_train_batch_size']} rows "
        f"({figures['tokens']} real tokens), {model_label}; median [lowest-highest] of the alternated steps"
    )
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in features.items())
    print(f"CPU flags: {flags}; torch sees {torch.backends.cpu.get_cpu_capability()}")
    print(
        "bf16/fp16 hardware (AVX512-BF16, AMX): "
        + ("yes" if has_bf16_hardware(features) else "no: bf16 and fp16 matmuls run in emulation here")
    )
    fp32 = median(figures["times"]["fp32"])
    for name, times in figures["times"].items():
        print(f"{name:<46} {spread(times, '.3f'):>24} s   {median(times) / fp32:6.2f}x the fp32 time")
    rows, shape = 256, (1024, 1024)  # small enough that emulated bf16 and fp16 finish in seconds
    speeds = {name: matmul_flops_per_s(rows, shape, getattr(torch, name), seconds=0.5, repeats=2) for name in
              ("float32", "bfloat16", "float16")}  # fmt: skip
    print(
        f"torch.mm {rows}x{shape[0]} @ {shape[0]}x{shape[1]}: "
        + "; ".join(f"{name} {v / 1e9:.1f} GFLOP/s ({v / speeds['float32']:.3f}x fp32)" for name, v in speeds.items())
    )


# ---------------------------------------------------------------- the GPU suite


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for key, tflops in GPU_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def gpu_suite(args, work: Path, extra: list[str]) -> None:
    """Every lesson's default on the full-size architecture, layouts 1 x 8 and 8 x 1 grouped, one GPU."""
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.model_name_or_path:
        raise UserError(
            "--gpu-suite needs a GPU; to run its code path on this CPU, pass --model_name_or_path <a small model>"
        )
    from common.models import load_tokenizer
    from common.tiny_model import build_tokenizer

    if args.model_name_or_path:
        model, label = args.model_name_or_path, args.model_name_or_path
    else:
        folder = work / "bloom-1b4-zh-random-bf16"
        if not (folder / "model.safetensors.index.json").is_file():
            print(f"[bench] writing the full-size architecture (random bf16 weights) to {folder} ...", file=sys.stderr)
            write_full_size_model(folder, build_tokenizer(), torch.bfloat16)
        model = str(folder)
        label = "bloom-1b4-zh's architecture (1,303,111,680 params) with random bf16 weights, built here"
    precision = ["--bf16", "true", "--dtype", "bfloat16"] if cuda else []
    args.samples = args.suite_steps * EFFECTIVE_BATCH
    train_file, eval_file, data_label = write_rows(args, load_tokenizer(model), work / "data")
    device_name = torch.cuda.get_device_name() if cuda else "CPU"
    peak = peak_flops(device_name, args.peak_tflops) if cuda else measure_limit(model)
    peak_label = (
        f"{peak / 1e12:.0f} TFLOPS dense bf16 ({device_name}, data sheet)"
        if cuda and peak
        else "unknown for this GPU (pass --peak_tflops)"
        if cuda
        else "this CPU's measured fp32 matmul limit"
    )
    print(f"\nGPU suite: {describe_machine()}\nmodel: {label}\ndata: {data_label}")
    print(
        f"{args.suite_steps} optimizer steps of {EFFECTIVE_BATCH} rows per run; "
        f"flags {' '.join(precision + extra) or 'none'}; "
        f"figures from the second step on; MFU = useful FLOP/s / peak, peak = {peak_label}"
    )
    layouts = {"1x8 random (course)": layout_flags(COURSE_LAYOUT), "8x1 grouped": layout_flags(ACCELERATOR_LAYOUT)}
    argv = training_argv(args, model, train_file, eval_file, [*precision, *extra], args.suite_steps)
    runs = [
        {
            "folder": LESSONS[lesson],
            "layout": name,
            "argv": [*argv, *flags, "--output_dir", str(work / f"{lesson}-{i}")],
        }
        for lesson in args.lessons
        for i, (name, flags) in enumerate(layouts.items())
    ]
    print(f"[bench] GPU suite: {len(runs)} runs in one process ...", file=sys.stderr, flush=True)
    results = run_worker("suite", {"runs": runs})["runs"]
    print("\n| lesson | layout | samples/s | tokens/s | peak GPU MB | TFLOP/s | MFU |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['folder']} | {r['layout']} | failed: {r['error']} | | | | |")
            continue
        mfu = f"{100 * r['flops_per_s'] / peak:.1f}%" if peak else "n/a"
        memory = f"{r['peak_mb']:,.0f}" if r["memory_kind"].startswith("GPU") else "n/a (CPU)"
        print(
            f"| {r['folder']} | {r['layout']} | {r['steady_samples_per_s']:.2f} | {r['steady_tokens_per_s']:,.0f} | "
            f"{memory} | {r['flops_per_s'] / 1e12:.3f} | {mfu} |"
        )
    failed = sum("error" in r for r in results)
    if failed:
        raise UserError(f"{failed} of {len(results)} GPU-suite runs failed (see the table)")


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
    parser.add_argument("--lessons", nargs="+", choices=list(LESSONS), default=list(LESSONS), help="default: all")
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs of each layout (default 3)")
    parser.add_argument(
        "--layouts",
        action="store_true",
        help=f"compare every candidate layout ({', '.join(CANDIDATE_LAYOUTS)}) instead of course vs defaults",
    )
    parser.add_argument("--samples", type=int, default=96, help="training rows (one epoch) per run")
    parser.add_argument("--eval_rows", type=int, default=32, help="held-out rows for the eval loss")
    parser.add_argument("--precision", action="store_true", help="time one training step in fp32, bf16 and fp16")
    parser.add_argument("--gpu-suite", dest="gpu_suite", action="store_true", help="the one-GPU suite (see above)")
    parser.add_argument("--suite_steps", type=int, default=20, help="optimizer steps per run in the GPU suite")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
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
        workers = {"train": train_worker, "memory": memory_worker, "generation": generation_worker}
        {**workers, "precision": precision_worker, "suite": suite_worker}[kind](json.loads(spec))
        return
    clash = [f for f in extra if f.split("=")[0] in LAYOUT_FLAGS]
    if clash:
        raise UserError(f"{clash[0]} is set by the benchmark itself (it compares batch layouts); drop it")
    if args.samples < EFFECTIVE_BATCH or args.samples % EFFECTIVE_BATCH:
        raise UserError(f"--samples must be a positive multiple of {EFFECTIVE_BATCH}")
    if args.repeats < 1 or args.suite_steps < 2:
        raise UserError("--repeats must be 1 or more and --suite_steps 2 or more")

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(args.output_dir or tmp)
        line, busy = load_line("before")
        if args.gpu_suite:
            warn_if_busy(line, busy)
            gpu_suite(args, work, extra)
            warn_if_busy(*load_line("after"))
            return
        from common.models import load_tokenizer
        from common.tiny_model import build_tiny_model

        model, model_label = args.model_name_or_path, args.model_name_or_path
        if model is None:
            model = str(build_tiny_model(work / "small-bloom", **SMALL_MODEL))
            model_label = "small random BLOOM (hidden 256, 4 layers, 4 heads, vocab 2000; repo's tiny tokenizer)"
        tokenizer = load_tokenizer(model)
        train_file, eval_file, data_label = write_rows(args, tokenizer, work / "data")
        print(f"bench: {describe_machine()}\nmodel: {model_label}")
        warn_if_busy(line, busy)
        if args.precision:
            print(f"[bench] precision on {model} ...", file=sys.stderr, flush=True)
            figures = run_worker("precision", {"model": model, "data": str(train_file), "repeats": args.repeats})
            print_precision(model_label, figures)
        else:
            print(
                f"data: {data_label}; {args.samples} samples per run = {args.samples // EFFECTIVE_BATCH} "
                f"optimizer step(s) of {EFFECTIVE_BATCH}; extra flags for every run: {' '.join(extra) or 'none'}"
            )
            if not args.dataset:
                for n in (args.samples, COURSE_ROWS):
                    eff = order_efficiency(n, args.seed)
                    print(
                        f"padding efficiency on {n:,d} rows of {ROW_TOKENS[0]}-{ROW_TOKENS[1]} tokens (batch order "
                        "only, no training): "
                        + "; ".join(f"batches of {b}, {order} {e:.3f}" for (b, order), e in eff.items())
                    )
            print(f"default layout on this device: {layout_label(default_layout())} (common/train_args.py)")
            limit = measure_limit(model)
            if args.layouts:
                layouts = {name: layout_flags(layout) for name, layout in CANDIDATE_LAYOUTS.items()}
            else:
                layouts = {"course": layout_flags(COURSE_LAYOUT), "defaults": []}
            argv = training_argv(args, model, train_file, eval_file, extra, args.samples // EFFECTIVE_BATCH)
            for lesson in args.lessons:
                print_runs(LESSONS[lesson], run_alternated(lesson, layouts, argv, work, args.repeats), limit)
        if args.memory:
            folder = Path(args.memory)
            if not (folder / "model.safetensors.index.json").is_file():
                print(f"[bench] writing the full-size architecture to {folder} ...", file=sys.stderr, flush=True)
                write_full_size_model(folder, tokenizer)
            print_memory(folder, run_worker("memory", {"model": str(folder)}))
        if args.generation:
            print(f"[bench] generation on {model} ...", file=sys.stderr, flush=True)
            figures = run_worker("generation", {"model": model, "tokens": args.gen_tokens})
            print_generation(model_label, args.gen_tokens, figures)
        warn_if_busy(*load_line("after"))
    print(f"\nbench took {time.time() - started:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
