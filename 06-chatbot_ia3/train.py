"""Lesson 06 - IA3: learn one scaling vector per adapted layer, multiplied into frozen activations.

python -m common.tiny_model tiny-bloom          # a tiny random BLOOM, for a CPU
python 06-chatbot_ia3/train.py --model_name_or_path tiny-bloom --dataset data/demo_zh.json \
    --per_device_train_batch_size 3 --gradient_accumulation_steps 1 --max_steps 150 --learning_rate 1e-1
python 06-chatbot_ia3/train.py --bf16 true          # bloom-1b4-zh on alpaca-zh, on a GPU
python 06-chatbot_ia3/train.py --help
"""

import sys
from dataclasses import dataclass
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

from peft import IA3Config, TaskType, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING
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

LEARNING_RATE = 3e-3


# ---------------------------------------------------------------- 1. config
@dataclass
class ScriptArguments(BaseScriptArguments):
    pass  # peft's defaults, as the course: the architecture decides which layers are scaled (section 5)


# ---------------------------------------------------------------- 5. method
def add_method(model, args: ScriptArguments, tokenizer):
    """IA3 freezes every weight and learns one vector l per adapted layer, multiplied element-wise into an
    activation: the layer's output, or for a feed-forward layer its input. l starts at ones, so training starts
    from the base model exactly; after training l can be merged into W (row or column scaling), so inference
    costs nothing extra.

    peft's defaults for BLOOM: the output of query_key_value (Q, K and V, fused) and the input of
    mlp.dense_4h_to_h (the 4h activations after GELU).
    Input:  x of shape (B, T, in) entering each adapted Linear (query_key_value: in = h; dense_4h_to_h: in = 4h)
    Output: l * (W x + b) for query_key_value (l: out = 3h numbers); W (l * x) + b for dense_4h_to_h (l: in = 4h)"""
    model_type = model.config.model_type
    if model_type not in TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING:  # peft's own error names no fix
        raise UserError(
            f"peft has no default IA3 layers for model type {model_type!r}; name them in section 5 of "
            f"{LESSON_DIR.name}/train.py: IA3Config(target_modules=[...], feedforward_modules=[...])"
        )
    config = IA3Config(task_type=TaskType.CAUSAL_LM)  # target and feed-forward modules: peft's, per architecture
    return get_peft_model(model, config)


def save_method(model, tokenizer, folder: Path) -> None:
    # adapter_config.json + adapter_model.safetensors: 1.4 MB on bloom-1b4-zh (344,064 numbers x 4 bytes)
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
