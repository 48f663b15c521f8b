"""A whole-model GGUF read back before it is kept: transformers loads it (`gguf_file=`), its logits and its
tokenizer are compared with the model it was written from; a failed check is a UserError, so nothing is kept."""

from pathlib import Path
from typing import Any

from loravc.core.errors import UserError

# Largest |logit| difference, relative to the largest |logit|, between a GGUF read back by transformers and the
# fp32 model it was written from, on the probe text. The writer itself is exact (an F32 file reads back with
# difference 0); what remains is the rounding of the weights: F16 measured 9e-4 on SmolLM2 (0.031 on logits up
# to 34), Q8_0's blocks of 32 values lose more.
TOLERANCE = {"f16": 1e-2, "q8_0": 5e-2}


def probe_logits(model: Any, tokenizer: Any) -> Any:
    """A model's fp32 logits on the probe text (the reference a GGUF read back is compared with)."""
    import torch

    from loravc.evaluate.evaluation import PROBE_TEXT

    with torch.no_grad():
        return model.float()(**tokenizer(PROBE_TEXT, return_tensors="pt")).logits[0]


def check_read_back(expected: Any, tokenizer: Any, path: Path, quant: str) -> dict[str, Any]:
    """Load the GGUF with transformers (`gguf_file=`) and compare its logits on the probe text with `expected`
    (the model's before merging), and its tokenizer's ids on the probe text and a conversation with `tokenizer`'s.

    F16 must give the same top-1 token at every position and logits within TOLERANCE["f16"] of the largest;
    Q8_0 within its looser bound. A failed check is a UserError, so nothing is kept.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from loravc.evaluate.evaluation import PROBE_TEXT

    inputs = tokenizer(PROBE_TEXT, return_tensors="pt")
    read = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        got = read(**inputs).logits[0]
    check_tokenizer(tokenizer, path)
    difference = float((expected - got).abs().max())
    relative = difference / float(expected.abs().max())
    same_top1 = int((expected.argmax(-1) == got.argmax(-1)).sum())
    positions = int(expected.shape[0])
    tolerance = TOLERANCE[quant]
    if not relative <= tolerance or (quant == "f16" and same_top1 != positions):
        raise UserError(
            f"{path.name} read back by transformers differs from the model: logits by {difference:.3g} "
            f"({relative:.3g} of the largest, bound {tolerance}), top-1 token at {positions - same_top1} of "
            f"{positions} positions: not saved"
        )
    return {
        "max_abs_difference": difference,
        "relative_difference": relative,
        "tolerance": tolerance,
        "top1_agreement": f"{same_top1}/{positions}",
        "probe": PROBE_TEXT,
    }


def check_tokenizer(tokenizer: Any, path: Path) -> None:
    """The GGUF's tokenizer, as transformers builds it from tokenizer.*, encodes like the version's own: the probe
    text, and a conversation through the chat template when there is one. A UserError otherwise."""
    from transformers import AutoTokenizer

    from loravc.evaluate.evaluation import PROBE_TEXT

    read = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    texts = [PROBE_TEXT, " leading space,\ttabs\n\nnewlines and numbers 12345 ünïcödé"]
    if tokenizer.chat_template:
        conversation = [{"role": "user", "content": PROBE_TEXT}, {"role": "assistant", "content": "assert"}]
        texts.append(tokenizer.apply_chat_template(conversation, tokenize=False))
    for text in texts:
        want, got = tokenizer.encode(text, add_special_tokens=False), read.encode(text, add_special_tokens=False)
        if want != got:
            raise UserError(
                f"{path.name}: its tokenizer encodes {text[:40]!r} differently from the version's "
                f"({got[:8]}... vs {want[:8]}...): not saved"
            )
