"""Stage `prepare`: validate the raw JSONL, drop exact duplicates, split train/validation/test.

Writes <out>/{train,validation,test}.jsonl and a metrics file with record and token counts.
Expected output for the default data:
    prepare: 464 records, 0 duplicates -> train 200, validation 24, test 40 (... tokens)
"""

import argparse
from pathlib import Path

from loravc.errors import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, required=True, help="raw JSONL file (text, prompt+completion or messages)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="model directory whose tokenizer counts tokens")
    parser.add_argument("--out", type=Path, required=True, help="directory for the prepared splits")
    parser.add_argument("--live", type=Path, required=True, help="dvclive directory for the stage's metrics")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args()

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
