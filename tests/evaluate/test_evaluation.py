import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from loravc.core.errors import UserError
from loravc.data import labels
from loravc.evaluate.evaluation import generate, generate_batched, perplexity, questions, stop_token_ids, task_scores
from tests.conftest import greedy_ids

TEXT_PLAN = labels.LossPlan(labels.ALL)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path) -> tuple[object, object]:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_prompt_tokens_are_not_scored(model_and_tokenizer: tuple) -> None:
    model, tok = model_and_tokenizer
    record = {"prompt": "The assert", "completion": " statement"}
    plan = labels.LossPlan(labels.COMPLETION)
    ids, mask = labels.encode(record, tok, plan, max_length=64)
    n_prompt = len(tok("The assert")["input_ids"])
    assert mask == [0] * n_prompt + [1] * (len(ids) - n_prompt) and ids[-1] == tok.eos_token_id
    # perplexity scores exactly those tokens: the model's own loss with the prompt's labels masked
    labels_ = torch.tensor([[i if m else -100 for i, m in zip(ids, mask, strict=True)]])
    reference = model(input_ids=torch.tensor([ids]), labels=labels_).loss.item()
    scored = perplexity(model, tok, [record], max_length=64, batch_size=1, plan=plan)
    assert scored["tokens"] == len(ids) - n_prompt and scored["loss"] == pytest.approx(reference, rel=1e-4)


def test_perplexity_matches_the_models_own_loss_and_ignores_batching(model_and_tokenizer: tuple) -> None:
    model, tok = model_and_tokenizer
    records = [{"text": "An assignment statement evaluates the expression list."}, {"text": "A class body."}]
    one = perplexity(model, tok, records, max_length=64, batch_size=1)
    two = perplexity(model, tok, records, max_length=64, batch_size=2)
    assert one["tokens"] == two["tokens"] and one["loss"] == pytest.approx(two["loss"], rel=1e-4)
    ids = torch.tensor([labels.encode(records[0], tok, TEXT_PLAN, 64)[0]])
    reference = model(input_ids=ids, labels=ids).loss.item()
    single = perplexity(model, tok, records[:1], max_length=64, batch_size=1)
    assert single["loss"] == pytest.approx(reference, rel=1e-4)
    assert single["perplexity"] == pytest.approx(math.exp(single["loss"]), rel=1e-3)


def model_ending_at(model: Any, tok: Any, prompt: str, step: int) -> Any:
    """A copy of model whose greedy continuation of prompt is EOS at `step` (0-based) at the latest, and that
    reads an EOS it is given as the prompt's first token, so that what would follow an EOS is ordinary text."""
    eos = tok.eos_token_id
    ending = copy.deepcopy(model)
    ending.lm_head.weight = torch.nn.Parameter(ending.lm_head.weight.detach().clone())  # untied from the input
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    ids = torch.cat([ids, torch.tensor([greedy_ids(model, tok, prompt, step)])], dim=1)
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        hidden, top = out.hidden_states[-1][0, -1], int(out.logits[0, -1].argmax())
        # EOS's logit there: the top token's plus one
        ending.lm_head.weight[eos] = model.lm_head.weight[top] + hidden / hidden.dot(hidden)
        ending.get_input_embeddings().weight[eos] = model.get_input_embeddings().weight[ids[0, 0]]
    return ending


def test_generate_returns_the_greedy_continuation_of_max_new_tokens(model_and_tokenizer: tuple) -> None:
    model, tok = model_and_tokenizer
    prompts = ["The assert", "A class body"]
    for limit in (1, 5):
        expected = []
        for prompt in prompts:
            longer = greedy_ids(model, tok, prompt, limit + 1)
            assert tok.eos_token_id not in longer  # the tiny model runs on past the limit
            text = tok.decode(longer[:limit], skip_special_tokens=True)
            assert text != tok.decode(longer, skip_special_tokens=True)  # one token more would show in the text
            expected.append(text)
        assert generate(model, tok, prompts, max_new_tokens=limit) == expected


def test_generate_stops_at_eos(model_and_tokenizer: tuple) -> None:
    model, tok = model_and_tokenizer
    prompt = "The assert"
    ending = model_ending_at(model, tok, prompt, step=3)
    ids = greedy_ids(ending, tok, prompt, 10)
    assert 1 <= ids.index(tok.eos_token_id) == len(ids) - 1 < 9  # EOS well before the limit
    text = tok.decode(ids, skip_special_tokens=True)
    assert text == tok.decode(ids[:-1]) and text  # EOS itself is not printed, what came before it is
    # going on past EOS would add text
    assert tok.decode(greedy_ids(ending, tok, prompt, 10, stop_at_eos=False), skip_special_tokens=True) != text
    assert generate(ending, tok, [prompt], max_new_tokens=10) == [text]


def test_batched_answers_equal_one_at_a_time_greedy_and_restore_padding_side(model_and_tokenizer: tuple) -> None:
    model, tok = model_and_tokenizer
    prompts = ["The assert", "A class body is a", "An", "The with statement is used"]  # lengths differ: padding
    expected = generate(model, tok, prompts, max_new_tokens=6)
    assert len(set(map(len, (tok(p)["input_ids"] for p in prompts)))) > 1
    side = tok.padding_side
    assert generate_batched(model, tok, prompts, 6, batch_size=3) == expected
    assert tok.padding_side == side


def test_batched_answers_stop_at_eos_each_on_its_own(model_and_tokenizer: tuple) -> None:
    model, tok = model_and_tokenizer
    ending = model_ending_at(model, tok, "The assert", step=3)
    prompts = ["The assert", "A class body is a"]
    expected = generate(ending, tok, prompts, max_new_tokens=10)
    assert greedy_ids(ending, tok, prompts[0], 10)[-1] == tok.eos_token_id  # this one stops early
    assert tok.eos_token_id not in greedy_ids(ending, tok, prompts[1], 10)  # this one runs to the limit
    assert generate_batched(ending, tok, prompts, 10, batch_size=2) == expected


def test_stop_tokens_include_end_of_turn_tokens_of_the_vocabulary(model_and_tokenizer: tuple) -> None:
    model, tok = model_and_tokenizer
    assert stop_token_ids(model, tok) == [tok.eos_token_id]  # "<|endoftext|>" is also the tiny model's EOS
    chatty = copy.deepcopy(tok)
    chatty.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    assert stop_token_ids(model, chatty) == sorted({tok.eos_token_id, chatty.convert_tokens_to_ids("<|im_end|>")})


def test_questions_and_task_scores(model_and_tokenizer: tuple) -> None:
    _, tok = model_and_tokenizer
    test = [
        {"prompt": "What is 2 plus 2?", "completion": " 4."},
        {"prompt": "What is 3 plus 4?", "completion": " 7."},
        {"prompt": "What is 1 plus 1?", "completion": " 2."},
    ]
    asked = questions(test, tok)
    assert [q.reference for q in asked] == [" 4.", " 7.", " 2."] and asked[0].prompt == "What is 2 plus 2?"
    assert len({q.id for q in asked}) == 3 and questions(test[:1], tok)[0].id == asked[0].id
    answers = {"base": ["four", "7.", "no"], "tuned": ["4.", " 7. ", "2"]}
    summary, rows = task_scores(asked, answers, ["exact_match", "f1"], samples=200, seed=0)
    assert summary["task_records"] == 3
    assert summary["base_exact_match"] == pytest.approx(100 / 3, abs=1e-3)
    assert summary["tuned_exact_match"] == pytest.approx(200 / 3, abs=1e-3)
    assert summary["exact_match_gain"] == pytest.approx(100 / 3, abs=1e-3)
    assert summary["exact_match_gain_low"] <= summary["exact_match_gain"] <= summary["exact_match_gain_high"]
    assert rows[0]["tuned"] == {"answer": "4.", "exact_match": 100.0, "f1": 100.0}
    assert rows[2]["base"] == {"answer": "no", "exact_match": 0.0, "f1": 0.0}
    assert questions([{"text": "no answer here"}], tok) == []


def test_a_test_split_without_any_reference_is_refused(model_and_tokenizer: tuple) -> None:
    _, tok = model_and_tokenizer
    with pytest.raises(UserError, match=r"evaluate\.metrics: no test record has a reference answer"):
        questions([{"prompt": "Q?", "completion": " "}, {"prompt": "R?", "completion": ""}], tok)


def test_summary_text_shows_every_score_of_a_version() -> None:
    from types import SimpleNamespace

    from loravc.evaluate.evaluation import summary_text

    meta = SimpleNamespace(
        version_id="v_20261129_000000_abcdef",
        base_model={"id": "tiny"},
        lora=SimpleNamespace(r=4, alpha=16, target_modules=["q_proj", "v_proj"], options={}),
        metrics=SimpleNamespace(steps=20, train_loss=1.23456, validation_loss=2.34567),
        training=SimpleNamespace(quantization=None, early_stopping=None),
    )
    paths = {"adapter": Path("models/adapter"), "predictions": Path("p.json"), "samples": Path("s.md")}
    ppl = {"base": {"perplexity": 87.891, "tokens": 607}, "tuned": {"perplexity": 3.4771, "tokens": 607}}
    task = {"task_records": 87.0, "base_chrf": 15.02, "tuned_chrf": 45.12, "chrf_gain": 30.1}
    task |= {"chrf_gain_low": 24.08, "chrf_gain_high": 36.09}
    harnessed = {"base": {"docs_bits_per_byte": 0.9654, "docs_bits_per_byte_stderr": 0.01}}
    harnessed["tuned"] = {"docs_bits_per_byte": 0.9559, "docs_bits_per_byte_stderr": 0.01}
    assert summary_text(meta, paths, ppl, "assistant", ["chrf"], task, harnessed).splitlines() == [
        "version   v_20261129_000000_abcdef  (models/adapter, base tiny)",
        "lora      r=4 alpha=16 on q_proj, v_proj",
        "train     20 steps, train loss 1.2346, validation loss 2.3457",
        "test      perplexity base 87.89 -> fine-tuned 3.48 over 607 tokens (assistant)",
        "task      chrf base 15.0 -> fine-tuned 45.1, gain +30.1 (95% interval +24.1 to +36.1)",
        "          over 87 test records: p.json",
        "harness   docs_bits_per_byte base 0.9654 -> fine-tuned 0.9559",
        "samples   s.md",
    ]
    text = summary_text(meta, paths, ppl, "all", ["chrf"], {}, {"base": {}, "tuned": {}}).splitlines()
    assert text[4] == "task      none: text records have no reference answer (prompt-completion or chat data do)"
    assert len(text) == 6  # no harness lines without harness tasks

    # the recipe: PEFT variants and a quantized base on the lora line, an early stop on the train line
    meta.lora.options = {"use_dora": True, "init_lora_weights": "pissa_niter_4"}
    meta.training.quantization = {"bits": 4, "quant_type": "nf4", "bitsandbytes": "0.50.2"}
    meta.training.early_stopping = {
        "metric": "eval_loss",
        "best_step": 15,
        "best_value": 1.61234,
        "stopped_at_step": 20,
        "planned_steps": 60,
        "stopped_early": True,
    }
    text = summary_text(meta, paths, ppl, "all", [], {}, {"base": {}, "tuned": {}}).splitlines()
    assert text[1:3] == [
        "lora      r=4 alpha=16 on q_proj, v_proj, DoRA, PiSSA, 4-bit nf4 base",
        "train     20 steps, stopped at step 20 of 60 (best 15), train loss 1.2346, validation loss 2.3457",
    ]


def test_an_empty_answer_shows_as_empty_in_the_samples() -> None:
    from loravc.evaluate.evaluation import Sample, samples_markdown

    found = [Sample("Which function?", "<|im_start|>user\nWhich function?", "len", True)]
    text = samples_markdown("v_20261129_000000_abcdef", found, [""], ["len"])
    assert "**base:** (empty)\n" in text and "**fine-tuned:** len\n" in text
    raw = [Sample("The assert", "The assert", None, False)]  # a raw prompt: the continuation follows it
    text = samples_markdown("v_20261129_000000_abcdef", raw, [" \n"], [" statement"])
    assert "**base:** (empty)\n" in text and "**fine-tuned:** The assert statement\n" in text
