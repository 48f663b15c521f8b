"""Held-out loss and perplexity of a causal LM, and greedy samples, with model and inputs on one device."""

import math
from pathlib import Path
from typing import Any

from loravc import data


def load_base_and_adapter(base_dir: Path, adapter_dir: Path, device: str) -> tuple[Any, Any]:
    """(PeftModel, tokenizer) on `device`; `model.disable_adapter()` gives the base back."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).to(device)
    model.eval()
    return model, tokenizer


def _encode(record: data.Record, tokenizer: Any, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion (truncated) and how many of them are the prompt."""
    prompt, completion = data.render(record, tokenizer)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = [*completion_ids, tokenizer.eos_token_id]
    return (prompt_ids + completion_ids)[:max_length], len(prompt_ids)


def perplexity(
    model: Any, tokenizer: Any, records: list[data.Record], *, max_length: int, batch_size: int
) -> dict[str, float]:
    """Token-weighted mean loss over completion tokens, and its exponential."""
    import torch

    device = next(model.parameters()).device
    encoded = [_encode(r, tokenizer, max_length) for r in records]
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, n_prompt) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        input_ids, labels, attention = input_ids.to(device), labels.to(device), attention.to(device)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
        shifted_labels = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), shifted_labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_loss += loss.item()
        total_tokens += int((shifted_labels != -100).sum())
    mean = total_loss / max(total_tokens, 1)
    return {"loss": round(mean, 6), "perplexity": round(math.exp(mean), 4), "tokens": total_tokens}


def generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations, one prompt at a time (no padding effects on the output)."""
    import torch

    device = next(model.parameters()).device
    outputs = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt").to(device)
        with torch.no_grad():
            ids = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        outputs.append(tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    return outputs
