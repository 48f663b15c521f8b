"""Stage `evaluate`: test-split perplexity and task scores of the base vs base+adapter, and greedy samples.

Perplexity covers the tokens the loss trains on (loravc.data.labels): the completion, or every assistant
turn. For prompt-completion and chat data both models also answer every test prompt (greedy, batched,
stopping at end of turn), scored against the reference by `evaluate.metrics` (loravc.evaluate.scoring), with
the tuned-minus-base gain's paired bootstrap interval; every answer goes to reports/predictions.json.
`evaluate.harness` lm-evaluation-harness tasks (loravc.evaluate.harness) are run on both as well.
Samples continue the first `evaluate.samples` test records' prompts (chat data through the chat
template) and any fixed `evaluate.prompts`, next to the reference answer. Both models share one set
of base weights on one device (the adapter is switched off for the base figures). Writes dvclive
metrics and reports/samples.md, then prints a one-screen summary of the version (loravc.evaluate.run).
The two perplexities also go to a bar plot.
"""

from loravc.core.errors import run_main
from loravc.core.stage import arguments


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

    from loravc.core.params import load_max_length, load_sections
    from loravc.evaluate.params import EvaluateParams
    from loravc.evaluate.run import evaluate, summary, write

    ep = load_sections(args.params, evaluate=EvaluateParams).evaluate
    result = evaluate(ep, load_max_length(args.params), args.base, args.adapter, args.data, args.tasks)
    task = write(result, ep, args.live, args.samples, args.predictions)
    paths = {"adapter": args.adapter, "predictions": args.predictions, "samples": args.samples}
    print("\n" + summary(result, ep, task, paths))


if __name__ == "__main__":
    run_main(main)
