"""Lesson 01 - look inside a BitFit run: how far each bias moved from the base model, per layer and per module
(an analogue of Ben Zaken et al. 2022, Fig. 1). BLOOM's fused query_key_value bias is split into b_q, b_k, b_v.

python 01-chatbot_bitfit/look_inside.py --adapter 01-chatbot_bitfit/output-mini
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common` and `measure` import from anywhere

from common.errors import UserError, run_cli
from measure.inside import load_base, load_run, parser, pyplot, save_figure

# column -> where the bias sits in a BloomBlock (and which third of the fused Q/K/V bias)
COLUMNS = {
    "ln1": ("input_layernorm", None),
    "b_q": ("self_attention.query_key_value", 0),
    "b_k": ("self_attention.query_key_value", 1),
    "b_v": ("self_attention.query_key_value", 2),
    "dense": ("self_attention.dense", None),
    "ln2": ("post_attention_layernorm", None),
    "h_to_4h": ("mlp.dense_h_to_4h", None),
    "4h_to_h": ("mlp.dense_4h_to_h", None),
}


def bias_changes(model, base) -> list[dict[str, float]]:
    """Per layer: column -> mean |trained bias - base bias| over the bias's elements."""
    trained, before = dict(model.named_parameters()), dict(base.named_parameters())
    if not hasattr(model, "transformer") or not hasattr(model.transformer, "h"):
        raise UserError("look_inside.py reads BLOOM's layer names (transformer.h.N...); this model is not a BLOOM")
    heads, rows = model.config.n_head, []
    for i in range(len(model.transformer.h)):
        row = {}
        for column, (module, part) in COLUMNS.items():
            name = f"transformer.h.{i}.{module}.bias"
            delta = (trained[name] - before[name]).detach()
            if part is not None:  # the fused bias is laid out (heads, 3, head_dim): Q, K, V per head
                delta = delta.view(heads, 3, -1)[:, part]
            row[column] = delta.abs().mean().item()
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, "01").parse_args(argv)
    model, _, folder = load_run("01", args.adapter)
    rows = bias_changes(model, load_base(folder))
    print("mean |Δb| per element, trained - base")
    print("layer " + "".join(f"{c:>9}" for c in COLUMNS))
    for i, row in enumerate(rows):
        print(f"{i:>5} " + "".join(f"{row[c]:>9.3f}" for c in COLUMNS))
    means = {c: sum(r[c] for r in rows) / len(rows) for c in COLUMNS}
    print("mean  " + "".join(f"{means[c]:>9.3f}" for c in COLUMNS))
    print("largest: " + ", ".join(sorted(COLUMNS, key=means.get, reverse=True)[:3]))

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    grid = [[row[c] for c in COLUMNS] for row in rows]
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set(xticks=range(len(COLUMNS)), xticklabels=list(COLUMNS), yticks=range(len(rows)), ylabel="layer",
           title=f"BitFit: mean |Δbias| per element ({Path(args.adapter).name})")  # fmt: skip
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            color = "k" if value > 0.6 * max(map(max, grid)) else "w"
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(image, ax=ax)
    save_figure(fig, args.figure)


if __name__ == "__main__":
    run_cli(main)
