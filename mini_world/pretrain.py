"""Pretrain the course's mini BLOOM on the world's biographies (plain language modelling), then probe it.

    python -m mini_world.generate                     # data/world/ (already committed)
    python -m mini_world.pretrain                     # models/mini-bloom-zh/ (already committed)

The model is a BloomForCausalLM like bloom-1b4-zh (ALiBi, tied embeddings, LayerNorms with biases), only small,
so all five lessons apply to it unchanged. It reads biographies only: no questions and no Human/Assistant
format, so it knows facts but cannot yet answer questions about them.
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

from .generate import WORLD_DIR, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "mini-bloom-zh"


def build_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE in which every CJK character and every digit is its own pre-token, so that
    "王安宁毕业于" at the end of a prompt splits exactly as it does inside a biography."""
    from common.tiny_model import train_byte_bpe

    return train_byte_bpe(texts, vocab_size, isolate_cjk=True)


def batches(encoded: list[list[int]], batch_size: int, pad_id: int, generator):
    """Shuffled batches of whole biographies, right-padded; one biography per row (BLOOM must not pack rows)."""
    import torch

    order = torch.randperm(len(encoded), generator=generator).tolist()
    for start in range(0, len(order), batch_size):
        rows = [encoded[i] for i in order[start : start + batch_size]]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        yield ids, mask, labels


def param_groups(model, weight_decay: float):
    """Weight decay on the Linear matrices only: decaying LayerNorms, biases and the (tied) embedding pulls the
    embedding toward zero, which is the one matrix every fact passes through."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and "word_embeddings" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up, then cosine decay to `floor * peak`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(args) -> dict:
    import torch
    from transformers import BloomConfig, BloomForCausalLM

    from .probe import knowledge_probe, qa_exact_match, world_texts

    world = Path(args.world_dir)
    bios = [row["text"] for row in read_jsonl(world / "bios.jsonl")]
    tokenizer = build_tokenizer(world_texts(world), args.vocab_size)
    eos = tokenizer.eos_token_id
    encoded = [tokenizer(t)["input_ids"] + [eos] for t in bios]
    config = BloomConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden_size, n_layer=args.n_layer, n_head=args.n_head,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    model = BloomForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    steps_per_epoch = math.ceil(len(encoded) / args.batch_size)
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"{len(encoded)} biographies, {sum(map(len, encoded)):,} tokens per epoch, vocab {len(tokenizer)}, "
          f"{n_params:,} parameters, {total} steps", flush=True)  # fmt: skip
    log, step, start = [], 0, time.time()
    people = read_jsonl(world / "people.jsonl")
    for epoch in range(1, args.epochs + 1):
        model.train()
        losses, tokens = [], 0
        for ids, mask, labels in batches(encoded, args.batch_size, tokenizer.pad_token_id, generator):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, args.warmup_steps, args.lr, args.lr_floor)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tokens += int(mask.sum())
            step += 1
        entry = {"epoch": epoch, "loss": sum(losses) / len(losses), "seconds": round(time.time() - start, 1)}
        if epoch % args.probe_every == 0 or epoch == args.epochs:
            model.eval()
            entry["probe"] = knowledge_probe(model, tokenizer, people)["accuracy"]
        log.append(entry)
        print(json.dumps(entry), flush=True)
    model.eval()
    probe = knowledge_probe(model, tokenizer, people)
    qa_test = read_jsonl(world / "qa_test.jsonl")
    base_em = qa_exact_match(model, tokenizer, qa_test)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    summary = {
        "parameters": n_params,
        "config": {k: getattr(args, k) for k in ("hidden_size", "n_layer", "n_head", "vocab_size", "epochs", "lr",
                                                 "lr_floor", "warmup_steps", "batch_size", "weight_decay", "seed")},
        "tokens_per_epoch": sum(map(len, encoded)),
        "vocab": len(tokenizer),
        "threads": torch.get_num_threads(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "world": json.loads((world / "world.json").read_text(encoding="utf-8")),
        "final_loss": log[-1]["loss"],
        "wall_seconds": round(time.time() - start, 1),
        "probe_accuracy": probe["accuracy"],
        "probe_by_attribute": probe["by_attribute"],
        "qa_test_exact_match_before_finetuning": base_em["exact_match"],
        "log": log,
    }  # fmt: skip
    (out / "pretrain_log.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "README.md").write_text(model_card(summary), encoding="utf-8")
    print(json.dumps({k: v for k, v in summary.items() if k != "log"}, ensure_ascii=False), flush=True)
    return summary


def model_card(summary: dict) -> str:
    """The model card: how the model was made and what it knows, from this run's own figures."""
    cfg = summary["config"]
    defaults = vars(build_parser().parse_args([]))
    flags = "".join(f" --{k} {v}" for k, v in cfg.items() if v != defaults[k])
    threads = f"OMP_NUM_THREADS={summary['threads']} " if summary["threads"] == 1 else ""
    world_flags = " ".join(f"--{k} {v}" for k, v in summary["world"].items())
    by_key = ", ".join(f"{k} {v:.1%}" for k, v in summary["probe_by_attribute"].items())
    return f"""# mini-bloom-zh

课程自己的小型预训练模型：一个只读过虚构人物传记的小 BLOOM。
它和 bloom-1b4-zh 同属一个结构（`BloomForCausalLM`：ALiBi 位置、词嵌入与输出层共享、带偏置的 LayerNorm），
所以五种方法都能原样用在它上面。
它知道传记里的事实，但还不会回答问题：这正是微调要解锁的能力。

## 怎么做出来的

```bash
python -m mini_world.generate {world_flags}
{threads}python -m mini_world.pretrain{flags}
```

- 数据：`data/world/bios.jsonl`（{summary["tokens_per_epoch"]:,} 个 token 一轮）。
  只做语言建模：没有问题，没有 Human/Assistant 格式。
- 结构：hidden {cfg["hidden_size"]}，{cfg["n_layer"]} 层，{cfg["n_head"]} 个头，词表 {summary["vocab"]}，
  共 {summary["parameters"]:,} 个参数（fp32）。
- 分词器：在这个世界的文本上训练的 byte-level BPE。
  每个汉字、每个数字单独预切分，所以名字和事实在传记里和在提示末尾切得一样。
- 训练：AdamW，峰值学习率 {cfg["lr"]}，预热 {cfg["warmup_steps"]} 步后余弦衰减到峰值的 {cfg["lr_floor"]}，
  batch {cfg["batch_size"]}，{cfg["epochs"]} 轮，只对 Linear 矩阵做 weight decay {cfg["weight_decay"]}，梯度裁剪 1.0，
  种子 {cfg["seed"]}。
- 用时：{summary["wall_seconds"] / 60:.1f} 分钟（{summary["threads"]} 个 torch 线程，2 核 CPU；
  结束时 1 分钟负载 {summary["load_average_1min_at_end"]}，机器上同时还有别的任务，安静的机器会更快）。
- 最后一轮的训练损失：{summary["final_loss"]:.3f} nats/token。

## 它知道什么

- 知识探针：对每个人的每个属性，用传记里的句子开头（如“<名字>毕业于”）做贪心续写，
  续写以正确的值加句号开头才算对。
  {summary["probe_accuracy"]:.1%}（{len(summary["probe_by_attribute"])} 个属性：{by_key}）。
- 微调之前，用课程的提示格式问 QA-test 的问题：完全匹配 {summary["qa_test_exact_match_before_finetuning"]:.1%}。

`python -m mini_world.pretrain` 每次从头重做这个文件夹；`pretrain_log.json` 记录每一轮的损失和探针。
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world_dir", default=str(WORLD_DIR))
    parser.add_argument("--out_dir", default=str(MODEL_DIR))
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--n_layer", type=int, default=4)
    parser.add_argument("--n_head", type=int, default=4)
    parser.add_argument("--vocab_size", type=int, default=1000, help="upper bound; the world has fewer symbols")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--lr_floor", type=float, default=0.05, help="final learning rate as a fraction of peak")
    parser.add_argument("--warmup_steps", type=int, default=100)
    parser.add_argument("--weight_decay", type=float, default=0.1)
    parser.add_argument("--probe_every", type=int, default=10, help="epochs between knowledge probes")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        parser.error("need --epochs >= 1, --batch_size >= 1 and --lr > 0")
    pretrain(args)


if __name__ == "__main__":
    main()
