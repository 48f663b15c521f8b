import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from loravc.evaluation import _encode, generate, perplexity


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path) -> tuple[object, object]:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_prompt_tokens_are_not_scored(model_and_tokenizer: tuple) -> None:
    _, tok = model_and_tokenizer
    ids, n_prompt = _encode({"prompt": "The assert", "completion": " statement"}, tok, max_length=64)
    assert n_prompt == len(tok("The assert", add_special_tokens=False)["input_ids"])
    assert ids[-1] == tok.eos_token_id


def test_perplexity_matches_the_models_own_loss_and_ignores_batching(model_and_tokenizer: tuple) -> None:
    model, tok = model_and_tokenizer
    records = [{"text": "An assignment statement evaluates the expression list."}, {"text": "A class body."}]
    one = perplexity(model, tok, records, max_length=64, batch_size=1)
    two = perplexity(model, tok, records, max_length=64, batch_size=2)
    assert one["tokens"] == two["tokens"] and one["loss"] == pytest.approx(two["loss"], rel=1e-4)
    ids = torch.tensor([_encode(records[0], tok, 64)[0]])
    reference = model(input_ids=ids, labels=ids).loss.item()
    single = perplexity(model, tok, records[:1], max_length=64, batch_size=1)
    assert single["loss"] == pytest.approx(reference, rel=1e-4)
    assert single["perplexity"] == pytest.approx(math.exp(single["loss"]), rel=1e-3)


def test_greedy_generation_is_deterministic(model_and_tokenizer: tuple) -> None:
    model, tok = model_and_tokenizer
    first = generate(model, tok, ["The assert"], max_new_tokens=5)
    assert first == generate(model, tok, ["The assert"], max_new_tokens=5) and isinstance(first[0], str)
