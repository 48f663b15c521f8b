"""Stage `prepare`: validate the raw JSONL, drop exact duplicates, split train/validation/test.

Writes <out>/{train,validation,test}.jsonl and a metrics file with record and token counts.
Its output has this form (the default data's counts: data/README.md):
    prepare: <n> records, <d> duplicates -> train <n>, validation <n>, test <n> ({'train': <tokens>, ...} tokens)
"""

from loravc.errors import run_main
from loravc.stage import arguments


def main() -> None:
    args = arguments(
        __doc__,
        {
            "raw": "raw JSONL file (text, prompt+completion or messages)",
            "tokenizer": "model directory whose tokenizer counts tokens",
            "out": "directory for the prepared splits",
            "live": "dvclive directory for the stage's metrics",
        },
    )

    from loravc import data
    from loravc.params import load_params
    from loravc.tracking import write_summary

    params = load_params(args.params).prepare
    records = data.read_jsonl(args.raw)
    unique = data.dedupe(records)
    splits = data.split(
        unique,
        seed=params.seed,
        test=params.test_records,
        validation=params.validation_records,
        train=params.train_records,
    )
    data.write_splits(splits, args.out)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    tokens = {name: data.count_tokens(rows, tokenizer) for name, rows in splits.items()}
    summary = {"records": len(records), "duplicates": len(records) - len(unique)}
    summary |= {f"{name}_records": len(rows) for name, rows in splits.items()}
    summary |= {f"{name}_tokens": count for name, count in tokens.items()}
    write_summary(args.live, summary)
    counts = ", ".join(f"{name} {len(rows)}" for name, rows in splits.items())
    print(f"prepare: {summary['records']} records, {summary['duplicates']} duplicates -> {counts} ({tokens} tokens)")


if __name__ == "__main__":
    run_main(main)
