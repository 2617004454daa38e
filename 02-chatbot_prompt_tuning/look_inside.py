"""Lesson 02 - look inside a prompt-tuning run. (1) The vocabulary tokens nearest (cosine) to each learned prompt
vector, next to the token it started from (text init), as Lester et al. 2021 §7 do. (2) What the prompt does to
the first answer token: the logits at the last prompt position, trained minus bare base, on held-out questions.

python 02-chatbot_prompt_tuning/look_inside.py --adapter 02-chatbot_prompt_tuning/output-mini
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common` and `measure` import from anywhere

from common.errors import run_cli
from measure.inside import batch, held_out_prompts, load_base, load_run, parser, pyplot, save_figure


def nearest_tokens(model, tokenizer):
    """(prompt vectors (nvt, h), cosine (nvt, V) to every token embedding, the init token ids or None)."""
    import torch

    prompts = model.prompt_encoder["default"].embedding.weight.detach().float()  # the saved table
    vocab = model.get_input_embeddings().weight.detach().float()
    cosine = torch.nn.functional.normalize(prompts, dim=-1) @ torch.nn.functional.normalize(vocab, dim=-1).T
    config, init = model.peft_config["default"], None
    if str(config.prompt_tuning_init).endswith("TEXT"):  # peft's rule: the text's ids, cut or cycled to nvt
        ids = tokenizer(config.prompt_tuning_init_text)["input_ids"]
        init = (ids * config.num_virtual_tokens)[: config.num_virtual_tokens]
    return prompts, cosine, init


def first_token_logits(model, base, tokenizer, prompts: list[str]):
    """Logits at the last prompt position (where the first answer token is chosen): (trained, base), (B, V)."""
    import torch

    inputs = batch(tokenizer, prompts)
    with torch.no_grad():
        return model(**inputs).logits[:, -1].float(), base(**inputs).logits[:, -1].float()


def token_text(tokenizer, i) -> str:
    """The token as text; a lone byte of a multi-byte character (byte fallback) as <its byte-level symbol>."""
    text = tokenizer.decode([int(i)])
    return f"<{tokenizer.convert_ids_to_tokens(int(i))}>" if "\ufffd" in text else text


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, "02", questions=True).parse_args(argv)
    model, tokenizer, folder = load_run("02", args.adapter)
    show = lambda i: repr(token_text(tokenizer, i))  # noqa: E731
    vectors, cosine, init = nearest_tokens(model, tokenizer)
    vocab_norm = model.get_input_embeddings().weight.norm(dim=-1).mean().item()
    print(f"{len(vectors)} prompt vectors; mean norm {vectors.norm(dim=-1).mean():.2f} (vocabulary: {vocab_norm:.2f})")
    top = cosine.topk(1, dim=-1)
    for k, (value, i) in enumerate(zip(top.values[:, 0], top.indices[:, 0])):
        start = f"from {show(init[k])}, cos now {cosine[k, init[k]]:.2f}; " if init else ""
        print(f"  {k:>2}: {start}nearest {show(i)} {value:.2f}")
    if init:
        kept = sum(int(top.indices[k, 0]) == init[k] for k in range(len(vectors)))
        print(f"the init token is still the nearest for {kept} of {len(vectors)} vectors")

    trained, bare = first_token_logits(model, load_base(folder), tokenizer, held_out_prompts(args.questions))
    change = (trained - bare).mean(0)
    flipped = (trained.argmax(-1) != bare.argmax(-1)).float().mean().item()
    print(f"first answer token, {len(trained)} held-out questions: the top token changed in {flipped:.0%}")
    for side, logits in (("base", bare), ("trained", trained)):
        ids, counts = logits.argmax(-1).unique(return_counts=True)
        print(f"  {side}: {len(ids)} different top tokens, most often {show(ids[counts.argmax()])} ({counts.max()}x)")
    raised, lowered = change.topk(5).indices, (-change).topk(5).indices
    print("  logit raised most:  " + ", ".join(f"{show(i)} {change[i]:+.1f}" for i in raised))
    print("  logit lowered most: " + ", ".join(f"{show(i)} {change[i]:+.1f}" for i in lowered))

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].bar(range(len(vectors)), top.values[:, 0].numpy(), color="tab:blue", label="nearest token")
    if init:
        axes[0].scatter(range(len(vectors)), [cosine[k, init[k]].item() for k in range(len(vectors))],
                        color="tab:orange", zorder=3, label="its init token")  # fmt: skip
    for k, i in enumerate(top.indices[:, 0]):
        axes[0].annotate(token_text(tokenizer, i), (k, top.values[k, 0].item()), ha="center", va="bottom", fontsize=7)
    axes[0].set(title="cosine of each prompt vector to tokens", xlabel="virtual token", ylim=(0, 1.1))
    axes[0].legend(fontsize=8)
    picked = list(raised) + list(lowered)
    axes[1].barh([token_text(tokenizer, i) for i in picked], [change[i].item() for i in picked],
                 color=["tab:green"] * 5 + ["tab:red"] * 5)  # fmt: skip
    axes[1].invert_yaxis()
    axes[1].set(title="first answer token: mean logit change (trained - base)", xlabel="Δ logit")
    save_figure(fig, args.figure)


if __name__ == "__main__":
    run_cli(main)
