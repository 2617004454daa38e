"""Lesson 02 by hand: prompt tuning in plain torch, then checked against the peft model train.py builds.

python 02-chatbot_prompt_tuning/from_scratch.py --model_name_or_path tiny-bloom --prompt_init text|random
"""

import sys
from pathlib import Path

import torch
from torch import nn

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # `common`, for the comparison half only
IGNORE_INDEX = -100  # label value the loss skips


# ---------------------------------------------------------------- the method, by hand (plain torch)
class PromptEmbedding(nn.Module):
    """num_virtual_tokens learned vectors; attribute name `embedding` as in peft's PromptEmbedding."""

    def __init__(self, num_virtual_tokens: int, hidden: int, init_ids=None, word_embeddings=None):
        super().__init__()
        self.embedding = nn.Embedding(num_virtual_tokens, hidden)  # (nvt, h), random: nn.Embedding's N(0, 1)
        # text init: cut or repeat to nvt tokens (peft 0.21.2, tuners/prompt_tuning/model.py, PromptEmbedding.__init__)
        if init_ids is not None:
            ids = (init_ids * num_virtual_tokens)[:num_virtual_tokens]
            ids = torch.tensor(ids, device=word_embeddings.weight.device)  # (nvt,)
            self.embedding.weight = nn.Parameter(word_embeddings(ids).detach().clone().float())  # (nvt, h)


def extend_mask(mask: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([mask.new_ones(mask.shape[0], n), mask], dim=1)  # (B, n + T): virtual tokens always seen


class PromptTuningLM(nn.Module):
    """Frozen base model; the prompt is put in front of the input embeddings
    (peft 0.21.2, peft_model.py, PeftModelForCausalLM.forward)."""

    def __init__(self, base: nn.Module, prompt_encoder: PromptEmbedding):
        super().__init__()
        self.base, self.prompt_encoder = base.requires_grad_(False), prompt_encoder

    def forward(self, input_ids, attention_mask, labels=None):
        batch, n = input_ids.shape[0], self.prompt_encoder.embedding.num_embeddings
        embeds = self.base.get_input_embeddings()(input_ids)  # (B, T, h)
        prompts = self.prompt_encoder.embedding.weight.expand(batch, -1, -1)  # (B, nvt, h): one prompt for all
        embeds = torch.cat([prompts.to(embeds.dtype), embeds], dim=1)  # (B, nvt + T, h)
        if labels is not None:  # no loss on the virtual positions
            labels = torch.cat([labels.new_full((batch, n), IGNORE_INDEX), labels], dim=1)  # (B, nvt + T)
        return self.base(inputs_embeds=embeds, attention_mask=extend_mask(attention_mask, n), labels=labels)


def by_hand(model: nn.Module, args, tokenizer=None) -> PromptTuningLM:
    text_ids = tokenizer(args.prompt_init_text)["input_ids"] if args.prompt_init == "text" else None
    # the same defaults as train.py: the text's own length, or 10 random vectors
    n = args.num_virtual_tokens or (len(text_ids) if text_ids else 10)
    prompt = PromptEmbedding(n, model.config.hidden_size, text_ids, model.get_input_embeddings())
    return PromptTuningLM(model, prompt)


# ---------------------------------------------------------------- the same values, compared with peft
def copy_values(hand: PromptTuningLM, reference) -> None:
    # the init already agrees for text init; copying makes the random init agree too
    hand.prompt_encoder.load_state_dict(reference.prompt_encoder["default"].state_dict(), strict=True)


def main(argv=None) -> int:
    from common.check_by_hand import check, parse_args, report

    args = parse_args(LESSON_DIR, argv, __doc__)
    result = check(LESSON_DIR, by_hand, copy_values, args)
    return report(result, result.hand.prompt_encoder)


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(lambda argv: sys.exit(main(argv)))
