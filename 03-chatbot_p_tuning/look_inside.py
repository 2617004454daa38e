"""Lesson 03 - look inside: P-tuning's encoder against prompts trained directly (lesson 02, random init), both at
the same learning rate. Their training losses, step by step, and the virtual-token vectors each run hands the model:
their size next to the vocabulary's, and the cosine to the nearest token.

python 03-chatbot_p_tuning/look_inside.py --adapter 03-chatbot_p_tuning/output-mini \\
    --prompt_tuning 02-chatbot_prompt_tuning/output-random
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common` and `measure` import from anywhere

from common.errors import UserError, run_cli
from common.results import loss_curve, read_results
from measure.inside import load_run, parser, pyplot, save_figure


def virtual_tokens(model):
    """(the (nvt, h) vectors the model is given, the cosine of each to its nearest vocabulary token)."""
    import torch

    vectors = model.prompt_encoder["default"].embedding.weight.detach().float()  # saved, loaded for inference
    vocab = model.get_input_embeddings().weight.detach().float()
    cosine = torch.nn.functional.normalize(vectors, dim=-1) @ torch.nn.functional.normalize(vocab, dim=-1).T
    return vectors, cosine.max(-1).values


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, "03")
    p.add_argument("--prompt_tuning", required=True, help="a lesson-02 run's output folder, same learning rate")
    args = p.parse_args(argv)
    runs = {"P-tuning (encoder)": ("03", args.adapter), "prompt tuning (direct)": ("02", args.prompt_tuning)}
    curves, tokens = {}, {}
    for label, (lesson, folder) in runs.items():
        results = read_results(folder)  # the run's log, written next to its adapter/
        curves[label], (model, _, _) = loss_curve(results), load_run(lesson, folder)
        tokens[label] = virtual_tokens(model) + (results["learning_rate"],)
    rates = {lr for _, _, lr in tokens.values()}
    if len(rates) != 1:
        raise UserError(f"the two runs used different learning rates ({sorted(rates)}); train both with the same")
    steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves.values())))
    shown = [s for s in steps if s in (steps[0], 100, 200, steps[-1])]
    print(f"training loss at the same learning rate {rates.pop():g}")
    print(f"{'step':>24}" + "".join(f"{s:>7}" for s in shown))
    for label, curve in curves.items():
        print(f"{label:>24}" + "".join(f"{dict(curve)[s]:>7.3f}" for s in shown))
    vocab_norm = model.get_input_embeddings().weight.norm(dim=-1).mean().item()
    print(f"virtual-token vectors (vocabulary: mean norm {vocab_norm:.2f})")
    for label, (vectors, nearest, _) in tokens.items():
        norms = vectors.norm(dim=-1)
        print(f"{label:>24}: {len(vectors)} vectors, norm {norms.min():.2f}..{norms.max():.2f}, "
              f"cosine to the nearest token {nearest.mean():.2f}")  # fmt: skip

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for label, curve in curves.items():
        axes[0].plot([s for s, _ in curve], [v for _, v in curve], marker=".", label=label)
    axes[0].set(title="training loss, same learning rate", xlabel="step", ylabel="loss")
    axes[0].legend(fontsize=8)
    width = 0.4
    for n, (label, (vectors, _, _)) in enumerate(tokens.items()):
        positions = [k + (n - 0.5) * width for k in range(len(vectors))]
        axes[1].bar(positions, vectors.norm(dim=-1).numpy(), width=width, label=label)
    axes[1].axhline(vocab_norm, color="gray", linestyle="--", label="vocabulary mean")
    axes[1].set(title="norm of each virtual-token vector", xlabel="virtual token", yscale="log", ylim=(0.5, 300))
    axes[1].legend(fontsize=8)
    save_figure(fig, args.figure)


if __name__ == "__main__":
    run_cli(main)
