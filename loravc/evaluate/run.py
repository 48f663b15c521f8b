"""The evaluate stage's work: the base and base + adapter on the test split, and what the stage writes.

`score_model` is one model's pass over the test split (perplexity over the trained tokens, greedy answers to
the test prompts, samples, harness tasks); the stage runs it twice on one set of weights (the adapter
switched off for the base), and `loravc verify --evaluate` runs it again on a version to check its record.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loravc.core.metadata import VersionMetadata
from loravc.data import labels
from loravc.data import records as data
from loravc.evaluate import evaluation, harness
from loravc.evaluate.params import EvaluateParams

MODELS = {"base": "base", "tuned": "fine-tuned"}  # the bars of plots/custom/perplexity.json (dvc.yaml `plots`)


@dataclass
class Scores:
    """One model's figures on the test split."""

    perplexity: dict[str, float]
    answers: list[str] = field(default_factory=list)  # to the task prompts, in order
    samples: list[str] = field(default_factory=list)  # continuations of the sample prompts, in order
    harness: dict[str, float] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Both models' scores and what they were asked."""

    meta: VersionMetadata
    plan: labels.LossPlan
    asked: list[evaluation.Question]
    samples: list[evaluation.Sample]
    scores: dict[str, Scores]  # "tuned" and "base"


def score_model(
    model: Any,
    tokenizer: Any,
    test: list[data.Record],
    ep: EvaluateParams,
    max_length: int,
    plan: labels.LossPlan,
    *,
    prompts: Sequence[str] = (),
    samples: Sequence[str] = (),
    tasks: dict[str, Any] | None = None,
) -> Scores:
    """Perplexity over the tokens the loss trains on, greedy answers to `prompts` and continuations of
    `samples` (through the chat template for chat data), and the harness `tasks`, for the model as it is."""
    chat = data.record_shape(test[0]) in data.CHAT_SHAPES
    ppl = evaluation.perplexity(model, tokenizer, test, max_length=max_length, batch_size=ep.batch_size, plan=plan)
    answers = evaluation.generate_batched(
        model, tokenizer, list(prompts), ep.max_new_tokens, batch_size=ep.batch_size, templated=chat
    )
    sampled = evaluation.generate(model, tokenizer, list(samples), ep.max_new_tokens, templated=chat)
    scored: dict[str, float] = {}
    if tasks:  # the LoRA layers sit inside the base model's modules: on unless disable_adapter() is active
        options = {"batch_size": ep.batch_size, "limit": ep.harness_limit, "seed": ep.seed}
        options["max_length"] = ep.harness_max_length
        scored = harness.run(model.get_base_model(), tokenizer, ep.harness, tasks, **options)
    return Scores(ppl, answers, sampled, scored)


def evaluate(
    ep: EvaluateParams, max_length: int, base_dir: Path, adapter_dir: Path, data_dir: Path, tasks_dir: Path
) -> Evaluation:
    """The version in adapter_dir and its base on the prepared test split; every check that can fail on the
    data or the params (task references, harness tasks, the device) runs before a model loads."""
    from loravc.core.devices import resolve_device
    from loravc.core.metadata import read_metadata

    meta = read_metadata(adapter_dir)
    test = data.read_split(data_dir, "test")
    tokenizer = evaluation.load_tokenizer(adapter_dir)
    asked = evaluation.questions(test, tokenizer) if ep.metrics else []
    tasks = harness.load_tasks(ep.harness, tasks_dir)  # every task and its dataset, before the model loads
    device = resolve_device(ep.device, "evaluate.device")
    model, tokenizer = evaluation.load_base_and_adapter(base_dir, adapter_dir, device, tokenizer)
    plan = evaluation.evaluation_plan(test, tokenizer, meta.training.loss_on)  # the tokens the loss trained on
    chat = data.record_shape(test[0]) in data.CHAT_SHAPES
    found = evaluation.samples(test, ep.prompts, ep.samples, tokenizer, chat)
    inputs = {"prompts": [q.prompt for q in asked], "samples": [s.prompt for s in found], "tasks": tasks}
    scores = {"tuned": score_model(model, tokenizer, test, ep, max_length, plan, **inputs)}
    with model.disable_adapter():
        scores["base"] = score_model(model, tokenizer, test, ep, max_length, plan, **inputs)
    return Evaluation(meta, plan, asked, found, scores)


def write(result: Evaluation, ep: EvaluateParams, live: Path, samples: Path, predictions: Path) -> dict[str, Any]:
    """The stage's outputs: dvclive metrics and the perplexity bars, reports/predictions.json and
    reports/samples.md. Returns the task scores' summary (empty for text data)."""
    from loravc.core.tracking import write_summary

    scores = result.scores
    summary = {f"{which}_{key}": value for which, s in scores.items() for key, value in s.perplexity.items()}
    tuned, base = (scores[which].perplexity["perplexity"] for which in ("tuned", "base"))
    summary["perplexity_ratio"] = round(tuned / base, 4)
    answers = {which: s.answers for which, s in scores.items()}
    task, rows = evaluation.task_scores(result.asked, answers, ep.metrics, samples=ep.bootstrap_samples, seed=ep.seed)
    task = task if result.asked else {}
    summary |= task
    summary |= {f"{which}_harness_{key}": value for which, s in scores.items() for key, value in s.harness.items()}
    evaluation.write_predictions(predictions, ep.metrics, rows)
    bars = [{"perplexity": scores[which].perplexity["perplexity"], "model": name} for which, name in MODELS.items()]
    write_summary(live, summary, plots={"perplexity": bars})
    samples.parent.mkdir(parents=True, exist_ok=True)
    before, after = scores["base"].samples, scores["tuned"].samples
    samples.write_text(evaluation.samples_markdown(result.meta.version_id, result.samples, before, after), "utf-8")
    return task


def summary(result: Evaluation, ep: EvaluateParams, task: dict[str, Any], paths: dict[str, Path]) -> str:
    """The stage's one-screen summary of the version (evaluation.summary_text)."""
    ppl = {which: s.perplexity for which, s in result.scores.items()}
    harnessed = {which: s.harness for which, s in result.scores.items()}
    return evaluation.summary_text(result.meta, paths, ppl, result.plan.tokens, ep.metrics, task, harnessed)
