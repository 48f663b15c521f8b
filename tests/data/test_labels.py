"""The tokens the loss trains on: marked chat templates, the exact label mask, agreement with TRL."""

from importlib.resources import files
from pathlib import Path

import pytest
from transformers import AutoTokenizer
from trl.chat_template_utils import has_generation_markers

from loravc.core.errors import UserError
from loravc.data import labels

SYSTEM = {"role": "system", "content": "Answer in one word."}
TWO_TURNS = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "6."},
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.chat_template == labels.SMOLLM2_CHATML  # conftest gives the tiny model SmolLM2's template
    return tokenizer


@pytest.mark.parametrize(
    ("messages", "generation_prompt"),
    [
        (TWO_TURNS[:2], False),  # the default system prompt is injected
        ([SYSTEM, *TWO_TURNS[:2]], False),
        (TWO_TURNS, False),
        ([SYSTEM, *TWO_TURNS[:3]], True),
        (TWO_TURNS[:1], True),
    ],
)
def test_the_marked_template_renders_byte_identical_text(tok, messages: list, generation_prompt: bool) -> None:
    def render(template: str) -> str:
        return tok.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
        )

    assert render(labels.SMOLLM2_CHATML_MARKED) == render(labels.SMOLLM2_CHATML)
    assert "You are a helpful AI assistant named SmolLM" in render(labels.SMOLLM2_CHATML) or messages[0] == SYSTEM


def test_a_two_turn_conversation_trains_on_each_assistant_turn_and_its_end_of_turn(tok) -> None:
    plan = labels.loss_plan("messages", tok)
    assert (plan.tokens, plan.template_name) == (labels.ASSISTANT, "loravc:smollm2-chatml")
    ids, mask = labels.encode({"messages": [SYSTEM, *TWO_TURNS]}, tok, plan, max_length=10_000)
    assert ids == tok.apply_chat_template([SYSTEM, *TWO_TURNS], tokenize=True, return_dict=True)["input_ids"]
    runs, current = [], []
    for token, trained in zip(ids, mask, strict=True):
        if trained:
            current.append(token)
        elif current:
            runs, current = [*runs, current], []
    runs += [current] if current else []
    assert [tok.decode(run) for run in runs] == ["4.<|im_end|>\n", "6.<|im_end|>\n"]
    untrained = tok.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert untrained == (
        "<|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"
    )
    short_ids, short_mask = labels.encode({"messages": TWO_TURNS}, tok, plan, max_length=12)
    full_ids, full_mask = labels.encode({"messages": TWO_TURNS}, tok, plan, max_length=10_000)
    assert (short_ids, short_mask) == (full_ids[:12], full_mask[:12])  # truncated like TRL: the start is kept


def test_training_sees_the_same_tokens_and_mask(tok, tiny_model_dir: Path, tmp_path: Path) -> None:
    """What TRL's SFTTrainer tokenizes for training equals labels.encode, for every shape."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from loravc.train.config import sft_config
    from loravc.train.lora import lora_config
    from loravc.train.params import TrainParams

    chat_pc = {"prompt": [SYSTEM, TWO_TURNS[0]], "completion": [TWO_TURNS[1]]}
    cases = {
        "messages": [{"messages": TWO_TURNS}, {"messages": [SYSTEM, *TWO_TURNS[:2]]}],
        "prompt-completion": [{"prompt": "What is 2+2?", "completion": " 4."}],
        "chat-prompt-completion": [chat_pc],
        "text": [{"text": "An assignment statement evaluates the expression list."}],
    }
    params = TrainParams(
        device="cpu", max_length=256, trainer={"packing": False, "max_steps": 1, "eval_strategy": "no"}
    )
    cases["prompt-completion, data.loss_on: all"] = cases["prompt-completion"]
    for case, records in cases.items():
        shape, _, loss_on = case.partition(", data.loss_on: ")
        plan = labels.loss_plan(shape, tok, loss_on or "auto")
        tok.chat_template = plan.chat_template or labels.SMOLLM2_CHATML  # as the train stage does
        config = sft_config(params, "cpu", tmp_path / shape, plan)
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=config,
            train_dataset=Dataset.from_list(records),
            processing_class=tok,
            peft_config=lora_config(params.lora),
        )
        assert len(trainer.train_dataset) == len(records), case
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(records))])
        tok.chat_template = labels.SMOLLM2_CHATML
        for row, record in enumerate(records):
            ids, mask = labels.encode(record, tok, plan, max_length=256)
            expected = [i if m else -100 for i, m in zip(ids, mask, strict=True)]
            got = [int(x) for x in batch["labels"][row][: len(ids)]]
            assert all(int(x) == -100 for x in batch["labels"][row][len(ids) :]), case  # padding only after it
            assert got == expected, case
            if loss_on:  # every token of the prompt too
                assert -100 not in got[1:]


def test_template_families(tok) -> None:
    qwen = (files("trl") / "chat_templates" / "qwen2_5.jinja").read_text(encoding="utf-8")
    tok.chat_template = qwen
    try:
        name, template = labels.training_chat_template(tok)
        assert name.startswith("trl:") and has_generation_markers(template) and not has_generation_markers(qwen)
        tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        with pytest.raises(UserError, match=r"set data\.loss_on: all to train on every token"):
            labels.loss_plan("messages", tok)
        assert labels.loss_plan("messages", tok, "all") == labels.LossPlan(labels.ALL)
        tok.chat_template = None
        with pytest.raises(UserError, match="tokenizer has no chat template"):
            labels.loss_plan("chat-prompt-completion", tok)
        assert labels.loss_plan("text", tok).tokens == labels.ALL
    finally:
        tok.chat_template = labels.SMOLLM2_CHATML


def test_chat_and_text_data_are_encoded_without_importing_trl(tiny_model_dir: Path) -> None:
    """TRL takes seconds to import; prepare and evaluate need it only for prompt/completion data or a chat template
    loravc does not mark (the shipped base's is marked here)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from transformers import AutoTokenizer\n"
        "from loravc.data import labels\n"
        f"tok = AutoTokenizer.from_pretrained({str(tiny_model_dir)!r})\n"
        "chat = {'messages': [{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': 'a'}]}\n"
        "ids, mask = labels.encode(chat, tok, labels.loss_plan('messages', tok), max_length=10**9)\n"
        "labels.encode({'text': 'plain'}, tok, labels.loss_plan('text', tok), max_length=10**9)\n"
        "assert sum(mask) > 0\n"
        "print(sorted(m for m in sys.modules if m == 'trl' or m.startswith('trl.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    pc = code.replace("print(", "labels.encode({'prompt': 'q', 'completion': 'a'}, tok, "
                      "labels.loss_plan('prompt-completion', tok), max_length=10**9)\nprint(")  # fmt: skip
    assert "trl.data_utils" in subprocess.run([sys.executable, "-c", pc], capture_output=True, text=True).stdout
