"""Which tokens of a record the loss trains on: one answer for training, evaluation and prepare's counts.

- text: every token, then EOS.
- prompt + completion (strings): the completion and EOS (TRL's completion-only loss).
- messages: every assistant turn with its end-of-turn token (TRL's assistant-only loss). That needs a
  chat template whose assistant turns are marked with {% generation %}: TRL's
  get_training_chat_template marks the families it knows; MARKED below holds the ones it does not,
  each rendering byte-identical text to its original (tests/data/test_labels.py).
- conversational prompt + completion (message lists): the completion's messages (completion-only).
With `data.loss_on: all` every record trains on every token instead.
The marked template is for training only: a version keeps the base's plain template for inference.
"""

import hashlib
from dataclasses import dataclass
from typing import Any

from loravc.core.errors import UserError
from loravc.data.records import CHAT_PROMPT_COMPLETION, CHAT_SHAPES, PROMPT_COMPLETION, TEXT, Record

# SmolLM2's ChatML variant (SmolLM2-135M/360M/1.7B-Instruct): injects a default system prompt.
SMOLLM2_CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The same, with the assistant's content, <|im_end|> and newline inside {% generation %} (as TRL's
# qwen2_5_training.jinja marks ChatML), so they carry the loss and the model learns to stop.
SMOLLM2_CHATML_MARKED = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' + '\n' }}{% endgeneration %}"
    "{% else %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MARKED = {SMOLLM2_CHATML: ("loravc:smollm2-chatml", SMOLLM2_CHATML_MARKED)}

ALL, COMPLETION, ASSISTANT = "all", "completion", "assistant"


@dataclass(frozen=True)
class LossPlan:
    """What a shape of record trains on, and the chat template that renders it during training."""

    tokens: str  # ALL, COMPLETION or ASSISTANT
    chat_template: str | None = None  # the marked training template (ASSISTANT), else None: the tokenizer's own
    template_name: str | None = None  # where the marked template came from: base, trl:<sha256[:12]>, loravc:<family>


def loss_plan(shape: str, tokenizer: Any, loss_on: str = "auto") -> LossPlan:
    """The tokens a record of `shape` trains on (data.loss_on: auto or all); a UserError, before any model
    loads, if that cannot be done."""
    if shape in CHAT_SHAPES:
        _require_chat_template(tokenizer)
    if shape == TEXT or loss_on == ALL:
        return LossPlan(ALL)
    if shape in (PROMPT_COMPLETION, CHAT_PROMPT_COMPLETION):
        return LossPlan(COMPLETION)
    name, template = training_chat_template(tokenizer)
    return LossPlan(ASSISTANT, template, name)


def _require_chat_template(tokenizer: Any) -> None:
    if not tokenizer.chat_template:
        raise UserError(
            "the data is conversational but the base model's tokenizer has no chat template: use a chat (instruct) "
            "base model, or text / prompt-completion records"
        )


def training_chat_template(tokenizer: Any) -> tuple[str, str]:
    """(name, template) of a chat template that marks assistant turns and renders like the tokenizer's own."""
    template = tokenizer.chat_template
    if template in MARKED:  # (unmarked ones: checked before TRL, which takes seconds to import)
        return MARKED[template]
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(template):
        return "base", template
    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError:  # "patching is not supported for this template"
        patched = None
    if patched:
        return f"trl:{hashlib.sha256(patched.encode()).hexdigest()[:12]}", patched
    digest = hashlib.sha256(template.encode()).hexdigest()[:12]
    raise UserError(
        f"the base model's chat template (sha256 {digest}...) is of a family neither loravc nor TRL can mark for "
        "assistant-only loss: set data.loss_on: all to train on every token of a conversation "
        "(`dvc exp run -S data.loss_on=all`)"
    )


def encode(record: Record, tokenizer: Any, plan: LossPlan, max_length: int) -> tuple[list[int], list[int]]:
    """(token ids, loss mask) of a record as TRL's SFTTrainer tokenizes it, truncated to max_length.

    The mask is 1 where the token is a training target (the label of the position before it).
    """
    if "text" in record:
        ids = tokenizer(text=_with_eos(record["text"], tokenizer))["input_ids"]
        mask = [1] * len(ids)
    elif isinstance(record.get("prompt"), str):
        prompt_ids = tokenizer(text=record["prompt"])["input_ids"]
        ids = tokenizer(text=record["prompt"] + _with_eos(record["completion"], tokenizer))["input_ids"]
        start = _common_prefix_length(prompt_ids, ids)
        mask = [0] * start + [1] * (len(ids) - start)
    elif "prompt" in record:  # conversational prompt-completion
        prompt_ids = _chat(tokenizer, record["prompt"], add_generation_prompt=True)["input_ids"]
        ids = _chat(tokenizer, record["prompt"] + record["completion"])["input_ids"]
        start = _common_prefix_length(prompt_ids, ids)
        mask = [0] * start + [1] * (len(ids) - start)
    elif plan.tokens == ASSISTANT:
        rendered = _chat(tokenizer, record["messages"], chat_template=plan.chat_template, assistant_mask=True)
        ids, mask = rendered["input_ids"], list(rendered["assistant_masks"])
    else:
        ids = _chat(tokenizer, record["messages"])["input_ids"]
        mask = [1] * len(ids)
    if plan.tokens == ALL:
        mask = [1] * len(ids)
    return list(ids[:max_length]), mask[:max_length]


def _common_prefix_length(prompt_ids: list[int], ids: list[int]) -> int:
    """Where the completion starts, as TRL finds it (a prompt may render differently alone than followed by a
    completion); imported only for the data that needs it: trl.data_utils takes seconds to import."""
    from trl.data_utils import common_prefix_length

    return common_prefix_length(prompt_ids, ids)


def _with_eos(text: str, tokenizer: Any) -> str:
    eos = tokenizer.eos_token
    return text if eos is None or text.endswith(eos) else text + eos


def _chat(tokenizer: Any, messages: list[dict[str, Any]], *, assistant_mask: bool = False, **kwargs: Any) -> Any:
    return tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=assistant_mask, **kwargs
    )


def sample_prompt(record: Record, tokenizer: Any) -> tuple[str, str]:
    """(prompt text to generate from, reference answer) of a test record: a conversation's prompt is
    rendered with the chat template up to the assistant's turn; a text record's is its first eight words."""
    if "text" in record:
        words = record["text"].split(" ")
        return " ".join(words[:8]), " " + " ".join(words[8:])
    if isinstance(record.get("prompt"), str):
        return record["prompt"], record["completion"]
    if "messages" in record:
        turns, reference = record["messages"][:-1], record["messages"][-1]["content"]
    else:
        turns, reference = record["prompt"], "\n".join(m["content"] for m in record["completion"])
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True), reference


def chat_prompt(text: str, tokenizer: Any) -> str:
    """A user message rendered with the tokenizer's chat template, ready for the assistant's reply."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
