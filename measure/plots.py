"""compare.py's figures: training loss curves, parameters against eval loss, peak memory; and for a sweep scored
on answers, exact match against parameters and time, and the learning-rate sweep."""

from pathlib import Path

from .sweep import best_runs


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(rows: list[dict], out_dir: Path) -> list[str]:
    plt = _pyplot()
    names = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        ax.plot([s for s, _ in r["loss_curve"]], [v for _, v in r["loss_curve"]], label=r["variant"])
    ax.set(xlabel="step", ylabel="train loss", title="Training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curves.png", dpi=100)
    names.append("loss_curves.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        ax.scatter(r["trainable_params"], r["eval_loss"])
        ax.annotate(r["variant"], (r["trainable_params"], r["eval_loss"]), fontsize=8)
    ax.set(xscale="log", xlabel="trainable params (log)", ylabel="eval loss", title="Trainable params vs eval loss")
    fig.tight_layout()
    fig.savefig(out_dir / "params_vs_eval_loss.png", dpi=100)
    names.append("params_vs_eval_loss.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.barh([r["variant"] for r in rows], [r["peak_memory_mb"] for r in rows])
    ax.set(xlabel=f"peak memory, MB ({rows[0]['peak_memory_kind']})", title="Peak memory per variant")
    fig.tight_layout()
    fig.savefig(out_dir / "peak_memory.png", dpi=100)
    names.append("peak_memory.png")
    plt.close("all")
    return names


def plot_answers(rows: list[dict], base: dict, out_dir: Path) -> list[str]:
    plt = _pyplot()
    best = best_runs(rows)
    names = []
    axes = (("trainable_params", "trainable parameters (log)", "em_vs_params.png"),
            ("wall_time_s", "wall time of the training process, s (log)", "em_vs_time.png"))  # fmt: skip
    for key, xlabel, name in axes:
        fig, ax = plt.subplots(figsize=(8, 5))
        for r in best:
            ax.scatter(r[key], 100 * r["exact_match"])
            ax.annotate(r["variant"], (r[key], 100 * r["exact_match"]), fontsize=8)
        ax.axhline(100 * base["exact_match"], color="gray", linestyle="--", label="base model")
        ax.set(xscale="log", xlabel=xlabel, ylabel="held-out exact match, %",
               title="Best learning rate per variant")  # fmt: skip
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        names.append(name)
    fig, ax = plt.subplots(figsize=(8, 5))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        runs = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["learning_rate"])
        ax.plot([r["learning_rate"] for r in runs], [100 * r["exact_match"] for r in runs], marker="o", label=variant)
    ax.set(xscale="log", xlabel="learning rate (log)", ylabel="held-out exact match, %", title="Learning-rate sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "lr_sweep.png", dpi=100)
    names.append("lr_sweep.png")
    plt.close("all")
    return names
