"""Lesson 05 - look inside LoRA runs of different ranks: the singular values of each layer's update ΔW = B A x
scaling, and how much the top directions of a small rank lie inside those of a larger one (Hu et al. 2021 §7.2):

    phi(i, j) = ||U_i^T V_j||_F^2 / min(i, j)

U_i: the top-i right-singular vectors (input directions) of the smaller rank's matrix, V_j: the larger rank's top j.
phi is 1 when one subspace holds the other, and about max(i, j) / d for random subspaces of a d-dimensional input.
Computed from A, as in the paper, and from ΔW = B A, whose input directions are weighted by what B learned.

python 05-chatbot_lora/look_inside.py --adapter 05-chatbot_lora/output-r1 05-chatbot_lora/output-r2 \
    05-chatbot_lora/output-mini
"""

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common` and `measure` import from anywhere

from common.errors import UserError, run_cli
from measure.inside import load_run, parser, pyplot, save_figure


def lora_layers(model) -> dict[str, tuple]:
    """module name -> (A, ΔW) of every LoRA layer, in fp32."""
    layers = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            a = module.lora_A["default"].weight.detach().float()
            layers[name.split("base_model.model.")[-1]] = (a, module.get_delta_weight("default").detach().float())
    return layers


def overlap(small, big, r_small: int, r_big: int) -> list[list[float]]:
    """phi(i, j) for i <= r_small, j <= r_big, from the right-singular vectors (input directions) of each matrix."""
    import torch

    u, v = (torch.linalg.svd(m, full_matrices=False)[2][:r] for m, r in ((small, r_small), (big, r_big)))
    return [[((u[:i] @ v[:j].T) ** 2).sum().item() / min(i, j) for j in range(1, r_big + 1)]
            for i in range(1, r_small + 1)]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, "05", runs=" (several: runs of different ranks, e.g. r = 1, 2 and 8)").parse_args(argv)
    runs = {}
    for adapter in args.adapter:
        model, _, _ = load_run("05", adapter)
        runs[model.peft_config["default"].r] = lora_layers(model)
    ranks = sorted(runs)
    if len(ranks) < 2 or len({tuple(runs[r]) for r in ranks}) != 1:
        raise UserError("give --adapter two or more LoRA runs of different ranks on the same target modules")
    names, d = list(runs[ranks[0]]), next(iter(runs[ranks[0]].values()))[0].shape[1]
    top = ranks[-1]
    print(f"singular values of ΔW = B A x scaling, rank {top}")
    for name in names:
        s = runs[top][name][1].svd().S[:top]
        print(f"  {name}: " + " ".join(f"{x:.3f}" for x in s) + f"  (top share {s[0] ** 2 / (s**2).sum():.0%})")
    grids = {}
    for (small, big), (source, k) in itertools.product(itertools.combinations(ranks, 2), (("A", 0), ("ΔW", 1))):
        grid = [overlap(runs[small][n][k], runs[big][n][k], small, big) for n in names]
        mean = [[sum(g[i][j] for g in grid) / len(grid) for j in range(big)] for i in range(small)]
        grids[small, big, source] = mean
        print(f"phi(r={small} top i, r={big} top j) from {source}, mean of {len(names)} layers, chance max(i,j)/{d}:")
        for i, row in enumerate(mean):
            print(f"  i={i + 1}: " + " ".join(f"{x:.2f}" for x in row))

    import numpy as np

    plt = pyplot()
    pairs = list(itertools.combinations(ranks, 2))
    fig, axes = plt.subplots(1, 1 + len(pairs), figsize=(4 + 3 * len(pairs), 3.4))
    for name in names:
        s = runs[top][name][1].svd().S[:top]
        axes[0].plot(range(1, top + 1), (s / s[0]).numpy(), marker="o", label=name.split(".self_attention")[0])
    axes[0].set(title=f"ΔW singular values / largest, r={top}", xlabel="index", yscale="log")
    axes[0].legend(fontsize=7)
    for ax, (small, big) in zip(axes[1:], pairs):
        image = ax.imshow(grids[small, big, "ΔW"], vmin=0, vmax=1, cmap="magma", aspect="auto")
        for (i, j), value in np.ndenumerate(np.array(grids[small, big, "ΔW"])):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.6 else "k", fontsize=7)
        ax.set(title=f"phi from ΔW: r={small} vs r={big}", xlabel=f"top j of r={big}", ylabel=f"top i of r={small}")
        ax.set(xticks=range(big), xticklabels=range(1, big + 1), yticks=range(small), yticklabels=range(1, small + 1))
    fig.colorbar(image, ax=axes[-1])
    save_figure(fig, args.figure)


if __name__ == "__main__":
    run_cli(main)
