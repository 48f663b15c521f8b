"""Held-out loss and perplexity of a causal LM over the tokens the loss trains on, task answers to the
test prompts scored against their references, and greedy samples, with model and inputs on one device."""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loravc.core import quantization, recipe
from loravc.core.errors import UserError
from loravc.data import labels
from loravc.data import records as data
from loravc.evaluate import scoring

# logits probed after a load or merge
PROBE_TEXT = "The assert statement is a convenient way to insert debugging assertions into a program."


def load_tokenizer(adapter_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(adapter_dir)


def load_base_and_adapter(
    base_dir: Path, adapter_dir: Path, device: str, tokenizer: Any = None, *, quantized: bool = True
) -> tuple[Any, Any]:
    """(PeftModel, tokenizer) on `device`; `model.disable_adapter()` gives the base back.

    A version trained on a k-bit base (its metadata's training.quantization) gets its base quantized the same
    way, unless `quantized` is False (merging: the full-precision base)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or load_tokenizer(adapter_dir)
    recorded = quantization.recorded(adapter_dir) if quantized else None
    if recorded is None:
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, adapter_dir).to(device)
    else:
        quantization.check_available(recorded, device, key=f"{adapter_dir}/metadata.json training.quantization.bits")
        options = quantization.load_options(recorded, device)
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, **options)
        quantization.after_load(base)
        model = PeftModel.from_pretrained(base, adapter_dir)  # placed by the device map
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
    """Token-weighted mean loss over the trained tokens (loravc.data.labels), and its exponential."""
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


# End-of-turn tokens of common chat templates: generation stops there as well as at EOS.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS of the tokenizer and of the model's generation config, and any end-of-turn token in the vocabulary."""
    found = [tokenizer.eos_token_id, *_ids(getattr(model.generation_config, "eos_token_id", None))]
    vocab = tokenizer.get_vocab()
    found += [vocab[token] for token in END_OF_TURN if token in vocab]
    return sorted({i for i in found if i is not None})


def _ids(value: Any) -> list[int]:
    return list(value) if isinstance(value, list | tuple) else [] if value is None else [value]


def generate_batched(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, *, batch_size: int, templated: bool = False
) -> list[str]:
    """Greedy answers to `prompts`, `batch_size` at a time: left padding (so every prompt ends where
    generation starts) and the KV cache; each answer stops at EOS or end of turn, special tokens dropped.

    Rows of a padded batch can differ from one-at-a-time decoding in the last bits of their logits, so a
    near tie may resolve differently; the scores are meant over many records, not one.
    """
    import torch

    device = next(model.parameters()).device
    stop = stop_token_ids(model, tokenizer)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=not templated).to(device)
            with torch.no_grad():
                ids = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    use_cache=True,
                    eos_token_id=stop,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = ids[:, inputs["input_ids"].shape[1] :]
            answers += [tokenizer.decode(row, skip_special_tokens=True) for row in new]
    finally:
        tokenizer.padding_side = side
    return answers


@dataclass(frozen=True)
class Question:
    """A test record as a task: what the model is given, and the answer it should give."""

    id: str  # sha256 of the record: pairs the same record across versions
    prompt: str
    reference: str


def questions(test: list[data.Record], tokenizer: Any) -> list[Question]:
    """Every prompt-completion or chat test record as a question (text records have no answer to score)."""
    found = []
    for record in test:
        if "text" in record:
            continue
        prompt, reference = labels.sample_prompt(record, tokenizer)
        digest = hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        found.append(Question(digest[:16], prompt, reference))
    if found and not any(q.reference.strip() for q in found):
        raise UserError(
            "evaluate.metrics: no test record has a reference answer (every completion or last assistant turn "
            "is empty): fill them in, or set evaluate.metrics: [] to skip task scores"
        )
    return found


def task_scores(
    found: list[Question], answers: dict[str, list[str]], metrics: list[str], *, samples: int, seed: int
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(summary, per-record rows) of the base and tuned answers: each metric's mean for both, and the
    tuned-minus-base gain with its paired bootstrap interval (`<metric>_gain_low`/`_high`, 95%)."""
    rows = [
        {"id": q.id, "prompt": q.prompt, "reference": q.reference}
        | {
            which: {"answer": answers[which][i]} | scoring.score(answers[which][i], q.reference, metrics)
            for which in ("base", "tuned")
        }
        for i, q in enumerate(found)
    ]
    summary: dict[str, float] = {"task_records": len(rows)}
    for name in metrics:
        base, tuned = ([row[which][name] for row in rows] for which in ("base", "tuned"))
        gain = scoring.paired_bootstrap(base, tuned, samples=samples, seed=seed)
        summary |= {f"base_{name}": round(scoring.mean(base), 4), f"tuned_{name}": round(scoring.mean(tuned), 4)}
        summary |= {f"{name}_gain": gain.delta, f"{name}_gain_low": gain.low, f"{name}_gain_high": gain.high}
    return summary, rows


def write_predictions(path: Path, metrics: list[str], rows: list[dict[str, Any]]) -> None:
    """reports/predictions.json: `{"metrics": [...], "records": [...]}`, one record per line (readable diffs).
    Text data has no answers to score: its file lists no records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = ",\n".join(json.dumps(row, ensure_ascii=False, sort_keys=True) for row in rows)
    path.write_text(f'{{"metrics": {json.dumps(metrics if rows else [])},\n"records": [\n{records}\n]}}\n', "utf-8")


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
        lines += [f"**base:** {answered(shown, before)}\n", f"**fine-tuned:** {answered(shown, after)}\n"]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def answered(shown: str, answer: str) -> str:
    """A sample's answer after what is shown of its prompt; "(empty)" when the model ended it at once (an instruct
    base does on a raw prompt: docs/evaluation.md)."""
    return f"{shown}{answer}" if answer.strip() else "(empty)"


def summary_text(
    meta: Any,
    paths: dict[str, Path],
    ppl: dict[str, dict[str, float]],
    scored_tokens: str,
    metrics: list[str],
    task: dict[str, float],
    harnessed: dict[str, dict[str, float]],
) -> str:
    """The evaluate stage's one-screen summary of a version: LoRA, training, perplexity, task and harness
    scores. `paths`: the stage's adapter, predictions and samples paths; `task`: empty for text data."""
    lora, trained, training = meta.lora, meta.metrics, meta.training
    variants = [*recipe.variants(lora.options), recipe.quantized_base(training.quantization)]
    stop = recipe.early_stop(training.early_stopping)
    lines = [
        f"version   {meta.version_id}  ({paths['adapter']}, base {meta.base_model['id']})",
        f"lora      r={lora.r} alpha={lora.alpha} on {', '.join(lora.target_modules)}"
        + "".join(f", {name}" for name in variants if name),
        f"train     {trained.steps} steps{f', {stop}' if stop else ''}, train loss {trained.train_loss:.4f}, "
        f"validation loss {trained.validation_loss:.4f}",
        f"test      perplexity base {ppl['base']['perplexity']:.2f} -> fine-tuned {ppl['tuned']['perplexity']:.2f} "
        f"over {ppl['tuned']['tokens']} tokens ({scored_tokens})",
    ]
    for name in metrics if task else []:
        lines.append(
            f"{'task' if name == metrics[0] else '':<10}{name} base {task[f'base_{name}']:.1f} -> fine-tuned "
            f"{task[f'tuned_{name}']:.1f}, gain {task[f'{name}_gain']:+.1f} "
            f"(95% interval {task[f'{name}_gain_low']:+.1f} to {task[f'{name}_gain_high']:+.1f})"
        )
    if task:
        lines.append(f"{'':<10}over {int(task['task_records'])} test records: {paths['predictions']}")
    elif metrics:
        lines.append("task      none: text records have no reference answer (prompt-completion or chat data do)")
    shown = [key for key in harnessed.get("tuned", {}) if not key.endswith("_stderr")]
    for key in shown:
        label = "harness" if key == shown[0] else ""
        lines.append(f"{label:<10}{key} base {harnessed['base'][key]:.4f} -> fine-tuned {harnessed['tuned'][key]:.4f}")
    lines.append(f"samples   {paths['samples']}")
    return "\n".join(lines)
