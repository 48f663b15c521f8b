"""Stage `evaluate`: test-split perplexity and task scores of the base vs base+adapter, and greedy samples.

Perplexity covers the tokens the loss trains on (loravc.data.labels): the completion, or every assistant
turn. For prompt-completion and chat data both models also answer every test prompt (greedy, batched,
stopping at end of turn), scored against the reference by `evaluate.metrics` (loravc.evaluate.scoring), with
the tuned-minus-base gain's paired bootstrap interval; every answer goes to reports/predictions.json.
`evaluate.harness` lm-evaluation-harness tasks (loravc.evaluate.harness) are run on both as well.
Samples continue the first `evaluate.samples` test records' prompts (chat data through the chat
template) and any fixed `evaluate.prompts`, next to the reference answer. Both models share one set
of base weights on one device (the adapter is switched off for the base figures). Writes dvclive
metrics and reports/samples.md, then prints a one-screen summary of the version. The two
perplexities also go to a bar plot.
"""

from loravc.core.errors import run_main
from loravc.core.stage import arguments

PLOT_NAMES = {"base": "base", "tuned": "fine-tuned"}  # bars of plots/custom/perplexity.json (dvc.yaml `plots`)


def main() -> None:
    args = arguments(
        __doc__,
        {
            "base": "base model directory (stage `base`)",
            "adapter": "version directory (stage `train`)",
            "data": "prepared splits directory (stage `prepare`)",
            "live": "dvclive directory for the metrics",
            "samples": "markdown file for the greedy samples",
            "predictions": "JSON file of every test record's answers and scores",
            "tasks": "directory of local lm-evaluation-harness task YAMLs (for evaluate.harness)",
        },
    )

    from loravc.core.devices import resolve_device
    from loravc.core.metadata import read_metadata
    from loravc.core.params import load_max_length, load_sections
    from loravc.core.tracking import write_summary
    from loravc.data import records as data
    from loravc.evaluate import harness
    from loravc.evaluate.evaluation import (
        evaluation_plan,
        generate,
        generate_batched,
        load_base_and_adapter,
        load_tokenizer,
        perplexity,
        questions,
        samples,
        samples_markdown,
        summary_text,
        task_scores,
        write_predictions,
    )
    from loravc.evaluate.params import EvaluateParams

    ep = load_sections(args.params, evaluate=EvaluateParams).evaluate
    max_length = load_max_length(args.params)
    meta = read_metadata(args.adapter)
    test = data.read_split(args.data, "test")
    tokenizer = load_tokenizer(args.adapter)
    asked = questions(test, tokenizer) if ep.metrics else []  # checked before the model loads
    tasks = harness.load_tasks(ep.harness, args.tasks)  # every task and its dataset, before the model loads
    device = resolve_device(ep.device, "evaluate.device")
    model, tokenizer = load_base_and_adapter(args.base, args.adapter, device, tokenizer)
    plan = evaluation_plan(test, tokenizer, meta.training.loss_on)  # the tokens the loss trained on
    chat = data.record_shape(test[0]) in data.CHAT_SHAPES
    found = samples(test, ep.prompts, ep.samples, tokenizer, chat)
    prompts = [s.prompt for s in found]

    harness_args = {"batch_size": ep.batch_size, "limit": ep.harness_limit, "seed": ep.seed}
    harness_args["max_length"] = ep.harness_max_length

    def evaluate() -> tuple[dict[str, float], list[str], list[str], dict[str, float]]:
        scores = perplexity(
            model, tokenizer, test, max_length=max_length, batch_size=ep.batch_size, plan=plan
        )
        answers = generate_batched(
            model, tokenizer, [q.prompt for q in asked], ep.max_new_tokens, batch_size=ep.batch_size, templated=chat
        )
        sampled = generate(model, tokenizer, prompts, ep.max_new_tokens, templated=chat)
        scored: dict[str, float] = {}
        if tasks:  # the LoRA layers sit inside the base model's modules: on unless disable_adapter() is active
            scored = harness.run(model.get_base_model(), tokenizer, ep.harness, tasks, **harness_args)
        return scores, sampled, answers, scored

    ppl, outputs, answers, harnessed = {}, {}, {}, {}
    ppl["tuned"], outputs["tuned"], answers["tuned"], harnessed["tuned"] = evaluate()
    with model.disable_adapter():
        ppl["base"], outputs["base"], answers["base"], harnessed["base"] = evaluate()

    summary = {f"{which}_{key}": value for which, result in ppl.items() for key, value in result.items()}
    summary["perplexity_ratio"] = round(ppl["tuned"]["perplexity"] / ppl["base"]["perplexity"], 4)
    task, rows = task_scores(asked, answers, ep.metrics, samples=ep.bootstrap_samples, seed=ep.seed)
    summary |= task if asked else {}
    summary |= {f"{which}_harness_{key}": value for which, scores in harnessed.items() for key, value in scores.items()}
    write_predictions(args.predictions, ep.metrics, rows)
    bars = [{"perplexity": ppl[which]["perplexity"], "model": name} for which, name in PLOT_NAMES.items()]
    write_summary(args.live, summary, plots={"perplexity": bars})
    args.samples.parent.mkdir(parents=True, exist_ok=True)
    report = samples_markdown(meta.version_id, found, outputs["base"], outputs["tuned"])
    args.samples.write_text(report, encoding="utf-8")

    paths = {"adapter": args.adapter, "predictions": args.predictions, "samples": args.samples}
    print("\n" + summary_text(meta, paths, ppl, plan.tokens, ep.metrics, task if asked else {}, harnessed))


if __name__ == "__main__":
    run_main(main)
