"""Lesson 05 - LoRA: learn a low-rank update B @ A beside frozen weight matrices.

python -m common.tiny_model tiny-bloom          # a tiny random BLOOM, for a CPU
python 05-chatbot_lora/train.py --model_name_or_path tiny-bloom --dataset data/demo_zh.json \
    --per_device_train_batch_size 3 --gradient_accumulation_steps 1 --max_steps 150 --learning_rate 1e-2
python 05-chatbot_lora/train.py --bf16 true          # bloom-1b4-zh on alpaca-zh, on a GPU
python 05-chatbot_lora/train.py --help
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

from peft import LoraConfig, TaskType, get_peft_model
from transformers import set_seed

from common.artifacts import save_final
from common.checkpoints import TrainableStateTrainer, resume_checkpoint
from common.data import load_instruction_data, make_collator, tokenize_dataset
from common.distributed import setup_processes
from common.errors import run_cli
from common.lessons import lesson_module
from common.models import load_base_model, load_tokenizer
from common.parameters import print_trainable_parameters
from common.results import write_results
from common.train_args import BaseScriptArguments, parse_train_args

LEARNING_RATE = 2e-4


# ---------------------------------------------------------------- 1. config
@dataclass
class ScriptArguments(BaseScriptArguments):
    target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Layers to adapt: module names (suffix match), one regex matched against full names "
            "(e.g. '.*\\.1.*query_key_value'), or all-linear. Default: peft's choice for the architecture "
            "(BLOOM: query_key_value; Qwen2, Qwen3, Llama: q_proj v_proj)."
        },
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained in full and saved with the adapter, e.g. word_embeddings."}
    )
    lora_r: int = field(default=8, metadata={"help": "Rank of the update B @ A."})
    lora_alpha: int = field(default=16, metadata={"help": "The update is scaled by lora_alpha / lora_r."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch's input."})


# ---------------------------------------------------------------- 5. method
def add_method(model, args: ScriptArguments, tokenizer):
    """LoRA freezes every weight W and learns dW = B @ A with A: r x in and B: out x r, r tiny.
    B starts at zero, so training starts from the base model exactly; after training B @ A can be
    merged into W, so inference costs nothing extra.

    Input:  x of shape (B, T, in) entering each targeted Linear (BLOOM's query_key_value: in = h, out = 3*h)
    Output: W x + (alpha / r) * B(A(dropout(x))), shape (B, T, out); A x is only (B, T, r)"""
    targets = lesson_module(LESSON_DIR.name, "targets")  # this lesson's targets.py: layers and errors
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        target_modules=targets.choose_target_modules(model, args.target_modules),  # default: peft's
        modules_to_save=args.modules_to_save,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
    )
    with targets.explain_missing_targets(model, args.target_modules):  # peft's error as one line
        return get_peft_model(model, config)


def save_method(model, tokenizer, folder: Path) -> None:
    # adapter_config.json + adapter_model.safetensors: 6 MB for the default on bloom-1b4-zh, 381 MB with
    # modules_to_save=word_embeddings (a full embedding copy)
    model.save_pretrained(folder)
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
