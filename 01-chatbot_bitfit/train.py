"""Lesson 01 - BitFit: train only the bias terms, freeze everything else.

python -m common.tiny_model tiny-bloom          # a tiny random BLOOM, for a CPU
python 01-chatbot_bitfit/train.py --model_name_or_path tiny-bloom --dataset data/demo_zh.json \
    --per_device_train_batch_size 3 --gradient_accumulation_steps 1 --max_steps 400 --learning_rate 3e-2
python 01-chatbot_bitfit/train.py --bf16 true          # bloom-1b4-zh on alpaca-zh, on a GPU
python 01-chatbot_bitfit/train.py --help
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import set_seed

from common.artifacts import save_final, write_method_record
from common.checkpoints import TrainableStateTrainer, resume_checkpoint
from common.data import load_instruction_data, make_collator, tokenize_dataset
from common.distributed import setup_processes
from common.errors import UserError, run_cli
from common.models import load_base_model, load_tokenizer
from common.parameters import print_trainable_parameters, trainable_state
from common.results import write_results
from common.train_args import BaseScriptArguments, parse_train_args

LEARNING_RATE = 1e-3
BIASES_FILE = "bitfit_biases.safetensors"


# ---------------------------------------------------------------- 1. config
@dataclass
class ScriptArguments(BaseScriptArguments):
    biases: str = field(
        default="all",
        metadata={
            "help": "all: every bias (BitFit). query_mlp: only the query third b_q of query_key_value's bias and the "
            "MLP's first bias (dense_h_to_4h), the subset of Ben Zaken et al. 2022 §4 (BLOOM's fused layout only).",
            "choices": ["all", "query_mlp"],
        },
    )

    def check(self, training_args) -> None:
        # the trained biases are fp32 (see add_method); next to a half-precision weight, F.linear needs autocast
        if self.dtype != "float32" and not (training_args.fp16 or training_args.bf16):
            raise UserError(
                f"--dtype {self.dtype} needs mixed precision for BitFit: add --fp16 true (float16 base) or "
                "--bf16 true (bfloat16 base); the trained biases are kept in fp32"
            )


# ---------------------------------------------------------------- 5. method
def add_method(model, args: ScriptArguments, tokenizer):
    """BitFit freezes every weight and trains only the bias vectors (of Linear and LayerNorm layers alike):
    well under 0.1% of the model; every bias the model has (Qwen2: only the q/k/v projections). No new
    modules, no peft: we just choose what gets gradients. Trained biases are kept in fp32: with an fp16 base and
    --fp16, the GradScaler refuses fp16 gradients ("Attempting to unscale FP16 gradients").

    Input:  x of shape (B, T, in) entering each Linear or LayerNorm
    Output: the same layer's output with its trained bias b (shape (out,)) added: W x + b, (B, T, out)"""
    for name, param in model.named_parameters():
        param.requires_grad = "bias" in name
        if param.requires_grad:
            param.data = param.data.float()
    for module in model.modules():  # a LayerNorm needs its weight in its bias's dtype (bf16 base models)
        if isinstance(module, nn.LayerNorm) and module.bias is not None:
            module.weight.data = module.weight.data.float()
    require_biases(model)  # Llama, Qwen3: no bias anywhere, a clear error instead of training nothing
    if getattr(args, "biases", "all") == "query_mlp":  # callers that build the method alone pass no args
        only_query_and_mlp_in(model)
    return model


def only_query_and_mlp_in(model) -> None:
    """Train only b_q and the MLP's first bias. BLOOM fuses Q, K and V into one bias laid out (heads, 3, head_dim):
    the whole tensor stays trainable, and a gradient hook zeroes its K and V parts, so Adam never moves them."""
    blocks = [m for m in model.modules() if hasattr(m, "self_attention") and hasattr(m, "mlp")]
    if not blocks or not all(hasattr(b.self_attention, "query_key_value") for b in blocks):
        raise UserError("--biases query_mlp needs BLOOM's fused query_key_value; use --biases all for this model")
    keep = {id(b.self_attention.query_key_value.bias) for b in blocks} | {id(b.mlp.dense_h_to_4h.bias) for b in blocks}
    for param in model.parameters():
        param.requires_grad = param.requires_grad and id(param) in keep
    for block in blocks:
        bias, heads = block.self_attention.query_key_value.bias, block.self_attention.num_heads
        mask = (torch.arange(3) == 0).view(1, 3, 1).expand(heads, 3, bias.numel() // (3 * heads)).flatten()
        bias.register_hook(lambda grad, mask=mask.to(bias.dtype): grad * mask)
    changing = sum(
        b.self_attention.query_key_value.bias.numel() // 3 + b.mlp.dense_h_to_4h.bias.numel() for b in blocks
    )
    print(
        f"of the trainable params below, {changing:,d} can change: b_q (query_key_value.bias, query third) "
        "and dense_h_to_4h.bias"
    )


def require_biases(model) -> None:
    """BitFit needs bias terms; Llama and Qwen3 have none (their Linear layers are built with bias=False and
    RMSNorm has no bias), so BitFit would train nothing: stop before training and say what could be trained."""
    if not any(p.requires_grad for p in model.parameters()):
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise UserError(
            f"this model ({kind}) has no bias parameters, so BitFit has nothing to train; "
            "use another method, e.g. lesson 05 (LoRA) or 02 (prompt tuning)"
        )


def save_method(model, tokenizer, folder: Path) -> None:
    # only the trainable tensors (about 2 MB for bloom-1b4-zh), plus a record of the method, its base model
    # and the weights file, which infer.py reads back
    biases = trainable_state(model)  # every trainable tensor: the biases
    # --biases query_mlp trains a subset; the file still holds every bias, as infer.py expects
    biases |= {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if "bias" in n and n not in biases}
    save_file(biases, folder / BIASES_FILE)
    write_method_record(folder, "BITFIT", model, weights=BIASES_FILE, tensors=len(biases))
    tokenizer.save_pretrained(folder)


def main(argv: list[str] | None = None, callbacks: list | None = None):
    # callbacks: extra TrainerCallbacks for the Trainer (bench.py's step timer); the lesson itself needs none
    # 1. config, and the processes of this run
    args, training_args = parse_train_args(ScriptArguments, argv, LESSON_DIR, LEARNING_RATE)
    checkpoint = resume_checkpoint(training_args)  # None, or the folder to resume from, checked before loading
    setup_processes(training_args)  # under torchrun or deepspeed: join the process group; only rank 0 prints
    set_seed(training_args.seed)  # before step 5: the method's random init (LoRA A, soft prompts) draws from it
    # 2. data
    train_rows = load_instruction_data(args.dataset)
    eval_rows = load_instruction_data(args.eval_dataset) if args.eval_dataset else None
    # 3. tokenize
    tokenizer = load_tokenizer(args.model_name_or_path, args.trust_remote_code, args.prompt_format)
    train_ds = tokenize_dataset(train_rows, tokenizer, args.max_length)
    eval_ds = tokenize_dataset(eval_rows, tokenizer, args.max_length) if eval_rows else None
    # 4. base model
    model = load_base_model(args.model_name_or_path, args.dtype, args.trust_remote_code)
    # 5. method
    model = add_method(model, args, tokenizer)
    print_trainable_parameters(model)
    # 6. Trainer
    trainer = TrainableStateTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        data_collator=make_collator(tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    # 7. train
    result = trainer.train(resume_from_checkpoint=checkpoint)
    write_results(trainer, result, eval_ds)  # results.json: what compare.py and bench.py read
    # 8. save
    save_final(trainer, lambda folder: save_method(model, tokenizer, folder))
    return trainer


if __name__ == "__main__":
    run_cli(main)
