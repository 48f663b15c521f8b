"""Held-out loss and perplexity of a causal LM over the tokens the loss trains on, and greedy samples,
with model and inputs on one device."""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loravc import data, labels


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


def evaluation_plan(records: list[data.Record], tokenizer: Any, loss_on: str | None = None) -> labels.LossPlan:
    """The tokens to score: what the version trained on (`loss_on` from its metadata; None: the default
    for the records' shape, as versions made before it was recorded trained)."""
    return labels.loss_plan(data.record_shape(records[0]), tokenizer, labels.ALL if loss_on == labels.ALL else "auto")


def perplexity(
    model: Any,
    tokenizer: Any,
    records: list[data.Record],
    *,
    max_length: int,
    batch_size: int,
    plan: labels.LossPlan | None = None,
) -> dict[str, float]:
    """Token-weighted mean loss over the trained tokens (loravc.labels), and its exponential."""
    import torch

    plan = plan or evaluation_plan(records, tokenizer)
    device = next(model.parameters()).device
    encoded = [labels.encode(r, tokenizer, plan, max_length) for r in records]
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)
        labels_ = torch.full((len(batch), width), -100, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, mask) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            labels_[row, : len(ids)] = torch.tensor([i if m else -100 for i, m in zip(ids, mask, strict=True)])
        input_ids, labels_, attention = input_ids.to(device), labels_.to(device), attention.to(device)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
        shifted_labels = labels_[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), shifted_labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_loss += loss.item()
        total_tokens += int((shifted_labels != -100).sum())
    mean = total_loss / max(total_tokens, 1)
    return {"loss": round(mean, 6), "perplexity": round(math.exp(mean), 4), "tokens": total_tokens}


def generate(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, *, templated: bool = False
) -> list[str]:
    """Greedy continuations, one prompt at a time (no padding effects on the output), stopping at EOS.

    A `templated` prompt (rendered with the chat template) gets no special tokens added again.
    """
    import torch

    device = next(model.parameters()).device
    outputs = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=not templated).to(device)
        with torch.no_grad():
            ids = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        outputs.append(tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    return outputs


@dataclass(frozen=True)
class Sample:
    """A prompt both models continue: from a test record (with its reference answer) or a fixed prompt."""

    title: str
    prompt: str  # exactly what the model is given (chat prompts are rendered with the template)
    reference: str | None
    templated: bool


def samples(test: list[data.Record], fixed: list[str], count: int, tokenizer: Any, chat: bool) -> list[Sample]:
    """The first `count` test records' prompts, then the fixed prompts (a user message when `chat`)."""
    found = []
    for record in test[:count]:
        prompt, reference = labels.sample_prompt(record, tokenizer)
        title = record.get("text", "").split(" ")[:8] if "text" in record else None
        found.append(Sample(" ".join(title) if title else _last_user_turn(record), prompt, reference, chat))
    for text in fixed:
        found.append(Sample(text, labels.chat_prompt(text, tokenizer) if chat else text, None, chat))
    return found


def _last_user_turn(record: data.Record) -> str:
    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    turns = record["messages"][:-1] if "messages" in record else record["prompt"]
    return next((m["content"] for m in reversed(turns) if m["role"] == "user"), turns[-1]["content"])


def samples_markdown(version: str, found: list[Sample], base: list[str], tuned: list[str]) -> str:
    """reports/samples.md: each prompt with the reference answer (if any) and both continuations."""
    parts = [f"# Greedy samples: base vs {version}\n"]
    for sample, before, after in zip(found, base, tuned, strict=True):
        shown = "" if sample.templated else sample.prompt  # a raw prompt is continued, a chat prompt answered
        lines = [f"## {sample.title.splitlines()[0] if sample.title.strip() else '(empty prompt)'}\n"]
        if sample.templated:
            lines.append(f"```\n{sample.prompt}\n```\n")
        if sample.reference is not None:
            lines.append(f"**reference:** {shown}{sample.reference}\n")
        lines += [f"**base:** {shown}{before}\n", f"**fine-tuned:** {shown}{after}\n"]
        parts.append("\n".join(lines))
    return "\n".join(parts)
