"""Generation: the evaluate stage's answers, batched (left padding, KV cache) vs one prompt at a time.

Both ways answer the same test prompts greedily with the same model (the base, fp32); each round times
one pass of each, side by side, and the report gives generated tokens per second of both and their
ratio (median over rounds), and how many answers came out identical.

    python -m bench.generation                       # models/base, data/pydoc_qa/test.jsonl
    python -m bench.generation --records 32 --batch-size 8 --rounds 3

Output: a table of tokens/s per way; measured figures, with their date and machine, are in
docs/performance.md.
"""

import statistics
from pathlib import Path
from typing import Any

from bench.common import at_least_one, base_parser, report_machine, require_base, table, timed, write_json
from bench.project import ROOT
from loravc.core.errors import UserError, run_main


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "pydoc_qa" / "test.jsonl", help="JSONL records")
    parser.add_argument("--records", type=int, default=32, help="test records answered per pass")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch (evaluate.batch_size)")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="tokens per answer at most")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes of each way")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="one short round (CI); with --base a tiny model")
    args = parser.parse_args()
    for value, option in ((args.records, "--records"), (args.batch_size, "--batch-size"), (args.rounds, "--rounds")):
        at_least_one(value, option)
    require_base(args.base)
    if not args.data.is_file():
        raise UserError(f"--data {args.data}: no such file")
    if args.smoke:
        args.records, args.rounds, args.max_new_tokens = min(args.records, 6), 1, min(args.max_new_tokens, 4)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loravc.data import labels
    from loravc.data import records as data
    from loravc.evaluate.evaluation import generate, generate_batched

    records = data.read_jsonl(args.data)[: args.records]
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32).eval()
    chat = data.record_shape(records[0]) in data.CHAT_SHAPES
    prompts = [labels.sample_prompt(r, tokenizer)[0] for r in records]
    ways = {
        "one at a time": lambda: generate(model, tokenizer, prompts, args.max_new_tokens, templated=chat),
        f"batched ({args.batch_size})": lambda: generate_batched(
            model, tokenizer, prompts, args.max_new_tokens, batch_size=args.batch_size, templated=chat
        ),
    }
    answers: dict[str, list[str]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):  # side by side in each round: load on the machine hits both alike
        for name, way in ways.items():
            seconds[name] += timed(lambda way=way, name=name: answers.__setitem__(name, way()))
    result = _report(answers, seconds, tokenizer)
    info = report_machine()
    rows = [[name, r["tokens"], r["seconds"], r["tokens_per_second"]] for name, r in result["ways"].items()]
    print(table(["way", "generated tokens", "seconds (median)", "tokens/s"], rows))
    print(
        f"batched / one at a time: {result['speedup']:.2f}x tokens/s over {len(prompts)} prompts; "
        f"{result['identical']} of {len(prompts)} answers identical"
    )
    write_json(args.json, {"machine": info, "records": len(prompts), "rounds": args.rounds, **result})


def _report(answers: dict[str, list[str]], seconds: dict[str, list[float]], tokenizer: Any) -> dict[str, Any]:
    ways = {}
    for name, texts in answers.items():
        tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        median = statistics.median(seconds[name])
        ways[name] = {"tokens": tokens, "seconds": median, "runs": seconds[name], "tokens_per_second": tokens / median}
    one, batched = ways.values()
    first, second = answers.values()
    return {
        "ways": ways,
        "speedup": batched["tokens_per_second"] / one["tokens_per_second"],
        "identical": sum(a == b for a, b in zip(first, second, strict=True)),
    }


if __name__ == "__main__":
    run_main(main)
