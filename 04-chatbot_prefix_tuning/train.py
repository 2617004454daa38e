"""Lesson 04 - prefix tuning: learned keys and values put in front of every layer's attention.

python -m common.tiny_model tiny-bloom          # a tiny random BLOOM, for a CPU
python 04-chatbot_prefix_tuning/train.py --model_name_or_path tiny-bloom --dataset data/demo_zh.json \
    --per_device_train_batch_size 3 --gradient_accumulation_steps 1 --max_steps 600 --learning_rate 3e-2
python 04-chatbot_prefix_tuning/train.py --bf16 true          # bloom-1b4-zh on alpaca-zh, on a GPU
python 04-chatbot_prefix_tuning/train.py --help
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

from peft import PrefixTuningConfig, TaskType, get_peft_model
from transformers import set_seed

from common.artifacts import save_final
from common.checkpoints import TrainableStateTrainer, resume_checkpoint
from common.data import load_instruction_data, make_collator, tokenize_dataset
from common.distributed import setup_processes
from common.errors import UserError, run_cli
from common.models import load_base_model, load_tokenizer
from common.parameters import print_trainable_parameters
from common.results import write_results
from common.train_args import BaseScriptArguments, parse_train_args

LEARNING_RATE = 1e-2


# ---------------------------------------------------------------- 1. config
@dataclass
class ScriptArguments(BaseScriptArguments):
    prefix_projection: bool = field(
        default=False, metadata={"help": "Produce the prefixes with a two-layer MLP instead of learning them directly."}
    )
    num_virtual_tokens: int = field(default=10, metadata={"help": "Prefix length, per layer."})
    encoder_hidden_size: int | None = field(
        default=None,
        metadata={
            "help": "Hidden size of the projection MLP; default: the width of one prefix key (KV heads x "
            "head dim: the model's hidden size when every head has its own K/V)."
        },
    )

    def check(self, training_args) -> None:
        # transformers 5.x mirrors the deprecated --gradient_checkpointing into activation_checkpointing
        if training_args.activation_checkpointing:
            raise UserError(
                "prefix tuning cannot be combined with --activation_checkpointing (or --gradient_checkpointing): in "
                "training, transformers sets layer_past=None for every checkpointed layer before it runs, so the "
                "prefix never reaches attention; drop the flag or lower the batch size instead"
            )


# ---------------------------------------------------------------- 5. method
def add_method(model, args: ScriptArguments, tokenizer):
    """Prefix tuning learns, for every layer, num_virtual_tokens extra keys and values that each attention
    head attends to before the real tokens: it acts inside every layer, not only at the input. With
    prefix_projection an MLP produces them from smaller embeddings, which trains more steadily.

    Input:  trained table (nvt, L*2*h), L = layers, h = hidden size (with projection: (nvt, h) -> MLP -> (nvt, L*2*h))
    Output: per layer a key and a value of shape (B, heads, nvt, head_dim), read before the real tokens' own"""
    config = PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=args.num_virtual_tokens,
        prefix_projection=args.prefix_projection,
        encoder_hidden_size=args.encoder_hidden_size,
    )
    return get_peft_model(model, config)


def save_method(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder)  # the final prefixes only (3.9 MB on bloom-1b4-zh), not the MLP
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
