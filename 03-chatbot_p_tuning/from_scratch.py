"""Lesson 03 by hand: P-tuning's prompt encoder in plain torch, then checked against the peft model train.py builds.

python 03-chatbot_p_tuning/from_scratch.py --model_name_or_path tiny-bloom --encoder_type mlp|lstm
"""

import sys
from pathlib import Path

import torch
from torch import nn

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # `common`, for the comparison half only
IGNORE_INDEX = -100  # label value the loss skips


# ---------------------------------------------------------------- the method, by hand (plain torch)
class PromptEncoder(nn.Module):
    """Trainable embeddings -> encoder -> virtual tokens; layers as in peft 0.21.2, tuners/p_tuning/model.py,
    PromptEncoder.__init__."""

    def __init__(self, num_virtual_tokens: int, hidden: int, encoder_hidden: int, encoder_type: str):
        super().__init__()
        h, H = hidden, encoder_hidden
        self.embedding = nn.Embedding(num_virtual_tokens, h)  # (nvt, h)
        if encoder_type == "lstm":  # 2 layers, both directions: every virtual token sees all the others
            self.lstm_head = nn.LSTM(h, H, num_layers=2, bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * H, 2 * H), nn.ReLU(), nn.Linear(2 * H, h))
        else:
            self.mlp_head = nn.Sequential(nn.Linear(h, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(), nn.Linear(H, h))

    def forward(self) -> torch.Tensor:
        x = self.embedding.weight.unsqueeze(0)  # (1, nvt, h)
        if hasattr(self, "lstm_head"):
            x = self.lstm_head(x)[0]  # (1, nvt, 2H)
        return self.mlp_head(x)  # (1, nvt, h): computed once, shared by the whole batch


def extend_mask(mask: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([mask.new_ones(mask.shape[0], n), mask], dim=1)  # (B, n + T): virtual tokens always seen


class PTuningLM(nn.Module):
    """Frozen base model; the encoder's output goes in front of the input embeddings, as in lesson 02."""

    def __init__(self, base: nn.Module, prompt_encoder: PromptEncoder):
        super().__init__()
        self.base, self.prompt_encoder = base.requires_grad_(False), prompt_encoder

    def forward(self, input_ids, attention_mask, labels=None):
        batch, n = input_ids.shape[0], self.prompt_encoder.embedding.num_embeddings
        embeds = self.base.get_input_embeddings()(input_ids)  # (B, T, h)
        prompts = self.prompt_encoder().expand(batch, -1, -1)  # (B, nvt, h)
        embeds = torch.cat([prompts.to(embeds.dtype), embeds], dim=1)  # (B, nvt + T, h)
        if labels is not None:  # no loss on the virtual positions
            labels = torch.cat([labels.new_full((batch, n), IGNORE_INDEX), labels], dim=1)  # (B, nvt + T)
        return self.base(inputs_embeds=embeds, attention_mask=extend_mask(attention_mask, n), labels=labels)


def by_hand(model: nn.Module, args, tokenizer=None) -> PTuningLM:
    # encoder size left unset = the model's hidden size (peft 0.21.2, utils/other.py, _prepare_prompt_learning_config)
    h = model.config.hidden_size
    encoder = PromptEncoder(args.num_virtual_tokens, h, args.encoder_hidden_size or h, args.encoder_type)
    return PTuningLM(model, encoder)


# ---------------------------------------------------------------- the same values, compared with peft
def copy_values(hand: PTuningLM, reference) -> None:
    hand.prompt_encoder.load_state_dict(reference.prompt_encoder["default"].state_dict(), strict=True)


def main(argv=None) -> int:
    from common.check_by_hand import check, parse_args, report

    args = parse_args(LESSON_DIR, argv, __doc__)
    result = check(LESSON_DIR, by_hand, copy_values, args)
    kept = result.hand.prompt_encoder().numel()  # what the saved adapter holds: the output, not the encoder
    note = f"saved adapter: only the encoder's output, (nvt, h) = {kept:,d} numbers"
    return report(result, result.hand.prompt_encoder, [note])


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(lambda argv: sys.exit(main(argv)))
