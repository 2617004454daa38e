"""Lesson 06 - look inside an IA3 run: the learned scaling vectors l, per layer and per part (Q, K and V of the
fused query_key_value output, and l_ff on dense_4h_to_h's input). Every l starts at 1; how far did each part move?

python 06-chatbot_ia3/look_inside.py --adapter 06-chatbot_ia3/output-mini
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common` and `measure` import from anywhere

from common.errors import UserError, run_cli
from measure.inside import load_run, parser, pyplot, save_figure

PARTS = ("l_q", "l_k", "l_v", "l_ff")


def scaling_vectors(model) -> list[dict]:
    """Per layer: part -> its learned vector (1-D tensor). BLOOM's fused output is laid out (heads, 3, head_dim)."""
    heads, layers = model.config.n_head, {}
    for name, p in model.named_parameters():
        found = re.search(r"\.h\.(\d+)\..*(query_key_value|dense_4h_to_h)\.ia3_l", name)
        if not found:
            continue
        layer, scale = layers.setdefault(int(found[1]), {}), p.detach().flatten()
        if found[2] == "query_key_value":
            scale = scale.view(heads, 3, -1)
            layer.update(l_q=scale[:, 0].flatten(), l_k=scale[:, 1].flatten(), l_v=scale[:, 2].flatten())
        else:
            layer["l_ff"] = scale
    if not layers or any(set(layer) != set(PARTS) for layer in layers.values()):
        raise UserError("look_inside.py expects IA3 on BLOOM's query_key_value and dense_4h_to_h (peft's default)")
    return [layers[i] for i in sorted(layers)]


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, "06").parse_args(argv)
    model, _, _ = load_run("06", args.adapter)
    layers = scaling_vectors(model)
    print("mean |l - 1| per layer (min .. max of l)")
    print("layer" + "".join(f"{p:>20}" for p in PARTS))
    for i, layer in enumerate(layers):
        cells = (f"{(v - 1).abs().mean():.3f} ({v.min():.2f}..{v.max():.2f})" for v in layer.values())
        print(f"{i:>5}" + "".join(f"{c:>20}" for c in cells))
    moved = {p: sum((layer[p] - 1).abs().mean().item() for layer in layers) / len(layers) for p in PARTS}
    print("mean over layers: " + ", ".join(f"{p} {moved[p]:.3f}" for p in PARTS))
    order = sorted(PARTS, key=lambda p: -round(moved[p], 3))  # ties (l_q, l_k: see below) shown as "="
    ranking = order[0] + "".join((" = " if round(moved[a], 3) == round(moved[b], 3) else " > ") + b
                                 for a, b in zip(order, order[1:]))  # fmt: skip
    print(f"moved most: {ranking}")
    gap = max((layer["l_q"] - layer["l_k"]).abs().max().item() for layer in layers)
    print(f"max |l_q - l_k| over every layer: {gap:.1e}")

    plt = pyplot()
    fig, axes = plt.subplots(1, len(PARTS), figsize=(11, 3.2), sharey=True)
    for ax, part in zip(axes, PARTS):
        ax.boxplot([layer[part].numpy() for layer in layers], whis=(0, 100))
        ax.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
        ax.set(title=f"{part}: mean |l-1| {moved[part]:.3f}", xlabel="layer",
               xticks=range(1, len(layers) + 1), xticklabels=range(len(layers)))  # fmt: skip
    axes[0].set_ylabel("learned scale l (starts at 1)")
    fig.suptitle(f"IA3 scaling vectors ({Path(args.adapter).name}); boxes: quartiles, whiskers: min..max", fontsize=10)
    save_figure(fig, args.figure)


if __name__ == "__main__":
    run_cli(main)
