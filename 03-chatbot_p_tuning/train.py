"""Lesson 03 - P-tuning: virtual tokens produced by a small trained encoder (MLP or LSTM).

python -m common.tiny_model tiny-bloom          # a tiny random BLOOM, for a CPU
python 03-chatbot_p_tuning/train.py --model_name_or_path tiny-bloom --dataset data/demo_zh.json \
    --per_device_train_batch_size 3 --gradient_accumulation_steps 1 --max_steps 400 --learning_rate 1e-2
python 03-chatbot_p_tuning/train.py --bf16 true          # bloom-1b4-zh on alpaca-zh, on a GPU
python 03-chatbot_p_tuning/train.py --help
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, TaskType, get_peft_model
from transformers import set_seed

from common.artifacts import save_final
from common.checkpoints import TrainableStateTrainer, resume_checkpoint
from common.data import load_instruction_data, make_collator, tokenize_dataset
from common.distributed import setup_processes
from common.errors import run_cli
from common.models import load_base_model, load_tokenizer
from common.parameters import print_trainable_parameters
from common.results import write_results
from common.train_args import BaseScriptArguments, parse_train_args

LEARNING_RATE = 1e-3


# ---------------------------------------------------------------- 1. config
@dataclass
class ScriptArguments(BaseScriptArguments):
    encoder_type: str = field(
        default="mlp", metadata={"help": "Prompt encoder: mlp or lstm.", "choices": ["mlp", "lstm"]}
    )
    num_virtual_tokens: int = field(default=10, metadata={"help": "Virtual tokens put before every input."})
    encoder_hidden_size: int | None = field(
        default=None, metadata={"help": "Hidden size of the prompt encoder; default: the model's hidden size."}
    )


# ---------------------------------------------------------------- 5. method
def add_method(model, args: ScriptArguments, tokenizer):
    """P-tuning, like prompt tuning, prepends virtual tokens to the input embeddings, but does not learn
    them directly: a small encoder maps trainable embeddings to them. The MLP works on each virtual token
    separately (shared weights); only the bidirectional LSTM lets the tokens depend on each other. After
    training only the encoder's output is needed.

    Input:  trained embeddings (nvt, h) -> MLP: (nvt, H) -> (nvt, h); LSTM: (1, nvt, 2H) -> MLP head -> (nvt, h)
    Output: virtual tokens (B, nvt, h) put before the input embeddings (B, T, h): (B, nvt+T, h)"""
    config = PromptEncoderConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=args.num_virtual_tokens,
        encoder_reparameterization_type=PromptEncoderReparameterizationType[args.encoder_type.upper()],
        encoder_hidden_size=args.encoder_hidden_size,
    )
    return get_peft_model(model, config)


def save_method(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder)  # only the encoder's output, nvt x hidden: 82 kB (81,920 bytes) on bloom-1b4-zh
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
