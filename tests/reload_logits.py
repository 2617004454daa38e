"""Run in a fresh process: reload trained artifacts with each lesson's infer.py and save probe logits.

python tests/reload_logits.py OUT.safetensors VARIANT=LESSON=ADAPTER_DIR ...
"""

import sys

from helpers import lesson_module, probe_logits
from safetensors.torch import save_file

out = {}
for spec in sys.argv[2:]:
    variant, lesson, adapter = spec.split("=", 2)
    model, tokenizer = lesson_module(lesson, "infer").load_for_inference(adapter)
    out[variant] = probe_logits(model, tokenizer).contiguous()
save_file(out, sys.argv[1])
