"""lm-evaluation-harness tasks: loaded and checked before any model, scored on the model given."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from loravc.core.errors import UserError
from loravc.evaluate import harness

DOCS = [
    {"question": "2 plus 2", "choices": ["4", "5"], "answer": 0},
    {"question": "3 plus 4", "choices": ["8", "7"], "answer": 1},
    {"question": "1 plus 1", "choices": ["2", "3"], "answer": 0},
    {"question": "5 plus 1", "choices": ["9", "6"], "answer": 1},
]
TASK = """task: sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


# The same records as a loglikelihood task: a continuous score (perplexity of the right answer)
LIKELIHOOD_TASK = """task: sums_likelihood
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices[answer]}}}}"
metric_list:
  - metric: perplexity
"""


def write_task(tasks: Path, data: Path) -> Path:
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / "sums.yaml").write_text(TASK.format(data=data), encoding="utf-8")
    (tasks / "sums_likelihood.yaml").write_text(LIKELIHOOD_TASK.format(data=data), encoding="utf-8")
    return tasks


@pytest.fixture
def tasks_dir(tmp_path: Path) -> Path:
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    return write_task(tmp_path / "tasks", data)


def test_no_tasks_loads_nothing() -> None:
    assert harness.load_tasks([], Path("nowhere")) is None


def test_a_local_task_is_scored_as_by_hand(tasks_dir: Path, tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    manager = harness.load_tasks(["sums"], tasks_dir)
    scores = harness.run(model, tok, ["sums"], manager, batch_size=2, limit=None, seed=0)
    assert set(scores) == {"sums_acc", "sums_acc_stderr"}

    def loglikelihood(context: str, continuation: str) -> float:  # lm-eval: " " + choice after the context
        ids = tok(context + continuation)["input_ids"]
        start = len(tok(context)["input_ids"])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        return sum(float(logits[i - 1, ids[i]]) for i in range(start, len(ids)))

    right = []
    for doc in DOCS:
        context = f"Question: {doc['question']}\nAnswer:"
        best = max(range(2), key=lambda c: loglikelihood(context, " " + doc["choices"][c]))
        right.append(best == doc["answer"])
    assert scores["sums_acc"] == pytest.approx(sum(right) / len(DOCS))
    limited = harness.run(model, tok, ["sums"], manager, batch_size=2, limit=2, seed=0)["sums_acc"]
    assert limited == pytest.approx(sum(right[:2]) / 2)  # the first two records only


def test_a_task_that_does_not_exist_is_named(tasks_dir: Path) -> None:
    with pytest.raises(UserError, match=r"evaluate\.harness: no lm-eval task 'no_such_task_xyz'"):
        harness.load_tasks(["sums", "no_such_task_xyz"], tasks_dir)


def test_a_task_whose_dataset_is_not_there_is_refused_before_any_model(tmp_path: Path) -> None:
    tasks = write_task(tmp_path / "tasks", tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match=r"evaluate\.harness: task 'sums' could not be loaded \(.*remove it"):
        harness.load_tasks(["sums"], tasks)


def test_without_lm_eval_installed_it_says_how_to_get_it(tasks_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)  # import fails as if not installed
    message = r"run `bash scripts/setup.sh` \(the locks hold it\), or set evaluate\.harness: \[\]"
    with pytest.raises(UserError, match=message):
        harness.load_tasks(["sums"], tasks_dir)


def test_a_peft_model_is_scored_with_its_adapter_on_and_off(tasks_dir: Path, tiny_model_dir: Path) -> None:
    """What the evaluate stage does: one PeftModel, its base model's modules scored with the LoRA layers
    active (tuned) and inside disable_adapter() (base)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, init_lora_weights=False)
    )
    model.eval()
    manager = harness.load_tasks(["sums_likelihood"], tasks_dir)

    def by_hand(scored: object) -> float:  # exp(-mean log p(answer | question)), lm-eval's perplexity
        total = []
        for doc in DOCS:
            context = f"Question: {doc['question']}\nAnswer:"
            ids = tok(context + doc["choices"][doc["answer"]])["input_ids"]  # no delimiter: a loglikelihood task
            start = len(tok(context)["input_ids"])
            with torch.no_grad():
                logits = scored(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
            total.append(sum(float(logits[i - 1, ids[i]]) for i in range(start, len(ids))))
        return math.exp(-sum(total) / len(total))

    tuned = harness.run(model.get_base_model(), tok, ["sums_likelihood"], manager, batch_size=2, limit=None, seed=0)
    with model.disable_adapter():
        base = harness.run(model.get_base_model(), tok, ["sums_likelihood"], manager, batch_size=2, limit=None, seed=0)
        base_by_hand = by_hand(model)
    assert tuned["sums_likelihood_perplexity"] == pytest.approx(by_hand(model), rel=1e-4)
    assert base["sums_likelihood_perplexity"] == pytest.approx(base_by_hand, rel=1e-4)
    assert base_by_hand != pytest.approx(by_hand(model), rel=1e-3)  # the adapter does change the scores
