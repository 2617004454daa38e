"""Lesson 08's figure: the mini model's weights with the NF4 levels marked, and each layer's quantisation error
in nf4, fp4 and int8 (the hand-made quantisers of from_scratch.py, equal to bitsandbytes' bit for bit).

python 08-chatbot_qlora/weights_figure.py                  # models/mini-bloom-zh -> 08-chatbot_qlora/weights_nf4.png
python 08-chatbot_qlora/weights_figure.py --model_name_or_path tiny-bloom --out /tmp/w.png
"""

import argparse
import sys
from pathlib import Path

import torch

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))

from common.errors import UserError, run_cli
from common.lessons import lesson_module

FORMATS = ("nf4", "fp4", "int8")  # 4-bit with double quantisation (QLoRA's storage), 4-bit float, LLM.int8 rows


def quantised_matrices(model_dir: Path) -> dict[str, torch.Tensor]:
    """The weights bitsandbytes quantises: every Linear's matrix (the tied embedding / lm_head is not one)."""
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"no .safetensors weights in {model_dir}")
    weights = {k: v for f in files for k, v in load_file(f).items()}
    return {k: v.float() for k, v in weights.items() if v.dim() == 2 and "embed" not in k and "lm_head" not in k}


def relative_error(w: torch.Tensor, fmt: str) -> float:
    """||W - dequant(quant(W))|| / ||W|| (Frobenius)."""
    scratch = lesson_module(LESSON_DIR.name, "from_scratch")
    if fmt == "int8":
        codes, absmax = scratch.quantize_int8_rows(w)
        back = codes.float().mul_(absmax.unsqueeze(1).mul(1.0 / 127.0))
    else:
        back = scratch.dequantize_4bit(scratch.quantize_4bit(w, fmt, 64, True), fmt, 64)
    return ((w - back).norm() / w.norm()).item()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", default="models/mini-bloom-zh", help="a local model folder")
    parser.add_argument("--out", default=str(LESSON_DIR / "weights_nf4.png"), help="the PNG to write")
    args = parser.parse_args(argv)
    folder = Path(args.model_name_or_path)
    if not folder.is_dir():
        raise UserError(f"model not found: {folder} (a local folder with .safetensors weights)")
    scratch = lesson_module(LESSON_DIR.name, "from_scratch")
    weights = quantised_matrices(folder)
    errors = {name: [relative_error(w, fmt) for fmt in FORMATS] for name, w in weights.items()}
    short = {name: name.replace("transformer.", "").replace(".weight", "").replace("self_attention.", "attn.")
             for name in weights}  # fmt: skip
    print(f"relative quantisation error ||W - dequant(W_q)|| / ||W||, {folder.name}, every quantised matrix:")
    print(f"| layer | {' | '.join(FORMATS)} |\n|---|{'---:|' * len(FORMATS)}")
    for name, row in errors.items():
        print(f"| {short[name]} | " + " | ".join(f"{e:.4f}" for e in row) + " |")
    means = [sum(row[i] for row in errors.values()) / len(errors) for i in range(len(FORMATS))]
    print("| mean | " + " | ".join(f"{m:.4f}" for m in means) + " |")
    plot(weights, errors, short, scratch.nf4_levels(), Path(args.out), folder.name)
    print(f"figure written to {args.out}", file=sys.stderr)


def plot(weights, errors, short, levels, out: Path, model_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat = torch.cat([w.reshape(-1) for w in weights.values()])
    # what NF4 rounds: each weight divided by the absmax of its block of 64
    blocks = torch.cat([w.reshape(-1)[: w.numel() // 64 * 64].view(-1, 64) for w in weights.values()])
    scaled = (blocks / blocks.abs().max(dim=1, keepdim=True).values).reshape(-1)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    std = flat.std().item()
    axes[0].hist(flat.numpy(), bins=200, density=True, color="tab:blue", alpha=0.8)
    x = torch.linspace(flat.min().item(), flat.max().item(), 400)
    axes[0].plot(x, torch.exp(-0.5 * (x / std) ** 2) / (std * (2 * torch.pi) ** 0.5), "k--", lw=1,
                 label=f"normal, same std ({std:.3f})")  # fmt: skip
    axes[0].set(title=f"{model_name}: {flat.numel():,d} weights of the quantised layers", xlabel="weight",
                ylabel="density")  # fmt: skip
    axes[0].legend(fontsize=8)
    axes[1].hist(scaled.numpy(), bins=200, density=True, color="tab:green", alpha=0.8)
    for i, level in enumerate(levels.tolist()):
        axes[1].axvline(level, color="tab:red", lw=0.8, label="the 16 NF4 levels" if i == 0 else None)
    axes[1].set(title="each weight / absmax of its block of 64, with the NF4 levels", xlabel="scaled weight")
    axes[1].legend(fontsize=8)
    names = list(errors)
    width = 0.27
    for i, fmt in enumerate(FORMATS):
        axes[2].bar([k + (i - 1) * width for k in range(len(names))], [errors[n][i] for n in names], width,
                    label=fmt + (" (double quant.)" if fmt == "nf4" else ""))  # fmt: skip
    axes[2].set_xticks(range(len(names)), [short[n] for n in names], rotation=90, fontsize=6)
    axes[2].set(title="relative error per layer", ylabel="||W - dequant(W_q)|| / ||W||")
    axes[2].legend(fontsize=8, loc="upper center", ncols=3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    run_cli(main)
