"""Versioned LoRA fine-tuning on DVC: what the pipeline stages and the version tool share."""

import logging

# PEFT imports bitsandbytes (the qlora extra) wherever it is installed; on a CPU with AVX512-BF16, bitsandbytes
# 0.50.2 then warns on every import that an optional kernel for its repacked 4-bit layout is missing. That layout
# is the one loravc.core.quantization.after_load turns off, so the warning says nothing about any run here.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
