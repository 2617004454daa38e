"""Lesson 08 - QLoRA: lesson 05's LoRA on a frozen base model stored in 4 bits (NF4) or 8 bits.

pip install -r 08-chatbot_qlora/requirements.txt   # bitsandbytes
python -m common.tiny_model tiny-bloom              # a tiny random BLOOM, for a CPU
python 08-chatbot_qlora/train.py --model_name_or_path tiny-bloom --dataset data/demo_zh.json \
    --per_device_train_batch_size 3 --gradient_accumulation_steps 1 --max_steps 150 --learning_rate 1e-2
python 08-chatbot_qlora/train.py                      # bloom-1b4-zh in NF4 on a GPU (the source course's defaults)
python 08-chatbot_qlora/train.py --quantization int8  # an 8-bit base instead
python 08-chatbot_qlora/train.py --help
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # so `common` imports from any working directory

from peft import prepare_model_for_kbit_training
from transformers import set_seed

from common.artifacts import save_final, write_method_record
from common.checkpoints import TrainableStateTrainer, resume_checkpoint
from common.data import load_instruction_data, make_collator, tokenize_dataset
from common.distributed import setup_processes
from common.errors import run_cli
from common.lessons import lesson_module
from common.models import load_base_model, load_tokenizer
from common.parameters import print_trainable_parameters
from common.results import write_results
from common.train_args import ACCELERATOR_LAYOUT, default_layout, parse_train_args

LEARNING_RATE = 2e-4  # lesson 05's: the LoRA half is the same
LORA = lesson_module("05", "train")  # lesson 05's LoRA: its flags and its add_method
QUANTIZE = lesson_module(LESSON_DIR.name, "quantize")  # this lesson's quantize.py: the bitsandbytes side
METHOD = "QLORA"  # written to method.json: peft saves the adapter as plain LORA, lesson 05's type
# The source course's GPU recipe (bf16 compute, paged AdamW, gradient checkpointing), and what works on a CPU
GPU_DEFAULTS = dict(optim="paged_adamw_32bit", activation_checkpointing=True)
COMPUTE_DTYPE = {True: "bfloat16", False: "float32"}  # accelerator -> the 4-bit compute dtype


# ---------------------------------------------------------------- 1. config
@dataclass
class ScriptArguments(LORA.ScriptArguments):
    quantization: str = field(
        default="nf4",
        metadata={"help": "How the frozen base is stored: nf4 (QLoRA), fp4 (4-bit float) or int8 (LLM.int8).",
                  "choices": list(QUANTIZE.QUANTIZATIONS)},
    )  # fmt: skip
    double_quant: bool = field(
        default=True,
        metadata={"help": "4-bit: quantise the per-block scales too (8 bits, blocks of 256), as QLoRA does."},
    )
    compute_dtype: str | None = field(
        default=None,
        metadata={"help": "4-bit: the dtype the weights are dequantised to for each matmul. Default: bfloat16 on "
                  "a GPU, float32 on a CPU (this CPU has no bf16 hardware).", "choices": list(QUANTIZE.COMPUTE_DTYPES)},
    )  # fmt: skip

    def check(self, training_args) -> None:
        """Flags checked before anything is loaded; the device decides the defaults (any flag given wins)."""
        QUANTIZE.require_bitsandbytes()
        QUANTIZE.check_flags(self.quantization, self.double_quant, self.compute_dtype)
        QUANTIZE.refuse_quantized_folder(self.model_name_or_path, f"--quantization {self.quantization}")
        on_accelerator = default_layout(training_args.use_cpu) is ACCELERATOR_LAYOUT  # as the batch layout
        self.device = QUANTIZE.accelerator_device() if on_accelerator else "cpu"
        if self.compute_dtype is None and self.quantization != "int8":
            self.compute_dtype = COMPUTE_DTYPE[self.device != "cpu"]
        optim = getattr(training_args.optim, "value", training_args.optim)
        checkpointing = "on" if training_args.activation_checkpointing else "off"
        self.choice = f"on {self.device}: --optim {optim}, activation checkpointing {checkpointing}"

    @classmethod
    def training_defaults(cls, accelerator: bool) -> dict:
        return GPU_DEFAULTS if accelerator else {}  # on a CPU: the Trainer's AdamW, no checkpointing


# ---------------------------------------------------------------- 5. method
def add_method(model, args: ScriptArguments, tokenizer):
    """QLoRA = the base quantised and frozen, then lesson 05's LoRA beside it.

    Each targeted Linear holds W as 4-bit codes + one scale per 64 weights (nf4/fp4) or as int8 rows + one
    scale per row (int8). Forward: W is dequantised to the compute dtype for the matmul; the LoRA branch
    (fp32, trainable) is added exactly as in lesson 05. Gradients reach A and B only.

    Input:  x of shape (B, T, in) entering each targeted Linear
    Output: dequant(W_q) x + (alpha / r) * B(A(dropout(x))), shape (B, T, out)"""
    if next(model.parameters()).device.type == "meta":  # counting only (compare.py): nothing to quantise
        print("meta device: not quantised (peft counts a packed 4-bit byte as 2 weights: the same count)")
        return LORA.add_method(model, args, tokenizer)
    compute_dtype = args.compute_dtype or COMPUTE_DTYPE[QUANTIZE.default_device() != "cpu"]
    device = getattr(args, "device", QUANTIZE.default_device())  # set by check(); from_scratch.py skips it
    name, dtype = model.config._name_or_path, str(next(model.parameters()).dtype).removeprefix("torch.")
    model.to("meta")  # step 4's full-precision copy is not needed: free it before the quantised one is read
    model = QUANTIZE.load_quantized(
        name, args.quantization, args.double_quant, compute_dtype, dtype, device, args.trust_remote_code
    )
    shown = args.quantization
    if args.quantization != "int8":
        shown += f", double quantisation {'on' if args.double_quant else 'off'}, compute {compute_dtype}"
    print(f"quantised base: {shown}; {getattr(args, 'choice', f'on {device}')}")
    # freezes every weight and casts the unquantised ones (LayerNorms, embeddings) to fp32; gradient
    # checkpointing is left to the Trainer's --activation_checkpointing flag (default on for a GPU)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return LORA.add_method(model, args, tokenizer)


def save_method(model, tokenizer, folder: Path) -> None:
    # the LoRA adapter as lesson 05 saves it (peft_type LORA), plus method.json: this lesson's name for it and
    # the quantisation infer.py must rebuild (the adapter was trained against that quantised base)
    config = model.base_model.model.config.quantization_config
    quant = "int8" if config.load_in_8bit else config.bnb_4bit_quant_type
    compute = str(config.bnb_4bit_compute_dtype).removeprefix("torch.")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_method_record(folder, METHOD, model, **QUANTIZE.record(quant, config.bnb_4bit_use_double_quant, compute))


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
