"""Library messages a learner can do nothing about, silenced at their source, each for a stated reason.

Only exact messages are filtered, so any other warning from the same library still shows. Warnings this
project causes are fixed where they arise instead (e.g. `dataloader_pin_memory` in common/train_args.py).
"""

import logging
import warnings


def _not_cpu_fallback_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Setting accelerator to CPU")


def silence_library_noise() -> None:
    # peft 0.21.2's PeftModel.__init__ reads `model.is_gradient_checkpointing`, which transformers 5.x deprecates
    # in favour of `is_activation_checkpointing`: a FutureWarning on every get_peft_model / from_pretrained
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # peft 0.21.2 (PeftModel._adjust_prompt_learning_kwargs) drops the position_ids generate() builds for RoPE
    # models (Qwen, Llama) under prompt tuning and P-tuning, with a UserWarning at every step; the course
    # generates one prompt at a time there (common.generation.pads_shift_virtual_tokens), so the drop is exact
    warnings.filterwarnings("ignore", message=r"Position ids are not supported for parameter efficient tuning")
    # DeepSpeed 0.19 (when installed) is imported by accelerate's `extract_model_from_parallel` even for a plain
    # save_pretrained, and on a machine without GPUs logs "Setting accelerator to CPU ..." to stdout, where the
    # scripts print their results. Its logger is named "DeepSpeed"; a filter set before DeepSpeed configures
    # the logger stays on it.
    logger = logging.getLogger("DeepSpeed")
    if _not_cpu_fallback_notice not in logger.filters:
        logger.addFilter(_not_cpu_fallback_notice)
