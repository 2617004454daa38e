"""Lesson 04 - look inside a prefix-tuning run: how much attention each layer gives the learned prefix. The
prefix's keys and values come first in every layer's cache, so columns 0..nvt-1 of each attention matrix are the
prefix; the rest is the prompt. Measured on held-out questions, over the real (not padding) query positions.

python 04-chatbot_prefix_tuning/look_inside.py --adapter 04-chatbot_prefix_tuning/output-mini
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common` and `measure` import from anywhere

from common.errors import UserError, run_cli
from measure.inside import batch, held_out_prompts, load_run, parser, pyplot, save_figure


def prefix_mass(model, tokenizer, prompts: list[str]):
    """(per layer and head: mean attention on the prefix over real query positions, the same at each prompt's
    last position, where the answer's first token is chosen), each a (layers, heads) tensor."""
    import torch

    nvt = model.peft_config["default"].num_virtual_tokens
    inputs = batch(tokenizer, prompts)
    with torch.no_grad():
        attentions = model(**inputs, output_attentions=True, use_cache=False).attentions
    if not attentions or attentions[0].shape[-1] != nvt + inputs["input_ids"].shape[1]:
        raise UserError("the model returned no attention over prefix + prompt; look_inside.py needs eager attention")
    real = inputs["attention_mask"].float()  # (B, T); left padding: the last position is real in every row
    mass = torch.stack([a[..., :nvt].sum(-1) for a in attentions])  # (layers, B, heads, T)
    everywhere = (mass * real[None, :, None]).sum((1, 3)) / real.sum()
    last = mass[..., -1].mean(1)
    return everywhere, last


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, "04", questions=True).parse_args(argv)
    model, tokenizer, _ = load_run("04", args.adapter)
    everywhere, last = prefix_mass(model, tokenizer, held_out_prompts(args.questions))
    nvt, tokens = model.peft_config["default"].num_virtual_tokens, "all real query positions"
    print(f"attention on the {nvt}-token prefix, {args.questions} held-out questions (mean over heads; min..max head)")
    print(f"layer  {tokens:>28}  {'last prompt position':>28}")
    for i, (a, b) in enumerate(zip(everywhere, last)):
        cells = [f"{m.mean():.3f} ({m.min():.3f}..{m.max():.3f})" for m in (a, b)]
        print(f"{i:>5}  {cells[0]:>28}  {cells[1]:>28}")

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    for ax, values, title in ((axes[0], everywhere, tokens), (axes[1], last, "last prompt position")):
        layers, heads = values.shape
        for h in range(heads):
            ax.scatter(range(layers), values[:, h].numpy(), color="gray", s=12, label="one head" if h == 0 else None)
        ax.plot(range(layers), values.mean(1).numpy(), marker="o", label="mean over heads")
        ax.set(title=f"attention on the prefix: {title}", xlabel="layer", xticks=range(layers), ylim=(0, 1.02))
    axes[0].set_ylabel(f"attention mass on the {nvt} prefix tokens")
    axes[0].legend(fontsize=8)
    save_figure(fig, args.figure)


if __name__ == "__main__":
    run_cli(main)
