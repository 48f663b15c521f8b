"""Stage `evaluate`: test-split perplexity of the base vs base+adapter, and greedy samples.

Both models share one set of base weights on one device (the adapter is switched off for
the base figures). Writes dvclive metrics and a markdown file of samples, then prints a
one-screen summary of the version. The two perplexities also go to a bar plot.
"""

import argparse
from pathlib import Path

from loravc.errors import run_main

PLOT_NAMES = {"base": "base", "tuned": "fine-tuned"}  # bars of plots/custom/perplexity.json (dvc.yaml `plots`)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="base model directory (stage `base`)")
    parser.add_argument("--adapter", type=Path, required=True, help="version directory (stage `train`)")
    parser.add_argument("--data", type=Path, required=True, help="prepared splits directory (stage `prepare`)")
    parser.add_argument("--live", type=Path, required=True, help="dvclive directory for the metrics")
    parser.add_argument("--samples", type=Path, required=True, help="markdown file for the greedy samples")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args()

    from loravc import data
    from loravc.devices import resolve_device
    from loravc.evaluation import generate, load_base_and_adapter, perplexity
    from loravc.metadata import read_metadata
    from loravc.params import load_params
    from loravc.tracking import write_summary

    params = load_params(args.params)
    ep = params.evaluate
    meta = read_metadata(args.adapter)
    test = data.read_split(args.data, "test")
    model, tokenizer = load_base_and_adapter(args.base, args.adapter, resolve_device(ep.device, "evaluate.device"))
    ppl = {"tuned": perplexity(model, tokenizer, test, max_length=params.train.max_length, batch_size=ep.batch_size)}
    tuned_samples = generate(model, tokenizer, ep.prompts, ep.max_new_tokens)
    with model.disable_adapter():
        ppl["base"] = perplexity(model, tokenizer, test, max_length=params.train.max_length, batch_size=ep.batch_size)
        base_samples = generate(model, tokenizer, ep.prompts, ep.max_new_tokens)

    summary = {f"{which}_{key}": value for which, result in ppl.items() for key, value in result.items()}
    summary["perplexity_ratio"] = round(ppl["tuned"]["perplexity"] / ppl["base"]["perplexity"], 4)
    bars = [{"perplexity": ppl[which]["perplexity"], "model": name} for which, name in PLOT_NAMES.items()]
    write_summary(args.live, summary, plots={"perplexity": bars})
    args.samples.parent.mkdir(parents=True, exist_ok=True)
    args.samples.write_text(
        _samples_markdown(meta["version_id"], ep.prompts, base_samples, tuned_samples), encoding="utf-8"
    )

    print(f"\nversion   {meta['version_id']}  ({args.adapter}, base {meta['base_model']['id']})")
    print(
        f"lora      r={meta['lora']['r']} alpha={meta['lora']['alpha']} on {', '.join(meta['lora']['target_modules'])}"
    )
    print(
        f"train     {meta['metrics']['steps']} steps, train loss {meta['metrics']['train_loss']:.4f}, "
        f"validation loss {meta['metrics']['validation_loss']:.4f}"
    )
    print(
        f"test      perplexity base {ppl['base']['perplexity']:.2f} -> fine-tuned {ppl['tuned']['perplexity']:.2f} "
        f"over {ppl['tuned']['tokens']} tokens"
    )
    print(f"samples   {args.samples}")


def _samples_markdown(version: str, prompts: list[str], base: list[str], tuned: list[str]) -> str:
    parts = [f"# Greedy samples: base vs {version}\n"]
    for prompt, before, after in zip(prompts, base, tuned, strict=True):
        parts.append(f"## {prompt}\n\n**base:** {prompt}{before}\n\n**fine-tuned:** {prompt}{after}\n")
    return "\n".join(parts)


if __name__ == "__main__":
    run_main(main)
