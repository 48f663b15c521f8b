"""Stage `prepare`: validate the data, drop exact duplicates, split train/validation/test, count tokens.

The data is params.yaml `data.train` (dvc.yaml passes it): a JSONL file, whose test split is drawn
from it by `prepare.seed`, or a directory of JSONL files whose test.jsonl is a fixed test split.
Counts the tokens the loss trains on (loravc.data.labels) and the records longer than train.max_length;
a record left with no trained token after truncation is dropped, with a count (loravc.prepare.preparation).
Writes <out>/{train,validation,test}.jsonl, <out>/info.json (source, shape, files) and metrics.
Its output has this form (the default data's counts: data/README.md):
    prepare: <n> text records from <source>, <d> duplicates -> train <n>, validation <n>, test <n> (test: ...); ...
"""

from loravc.core.errors import run_main
from loravc.core.stage import arguments


def main() -> None:
    args = arguments(
        __doc__,
        {
            "data": "a JSONL file, or a directory of JSONL files (test.jsonl: a fixed test split)",
            "tokenizer": "model directory whose tokenizer counts tokens",
            "out": "directory for the prepared splits",
            "live": "dvclive directory for the stage's metrics",
        },
    )

    from loravc.data import records as data
    from loravc.prepare.params import load_inputs

    params = load_inputs(args.params)  # a bad param is reported before transformers is imported

    from transformers import AutoTokenizer

    from loravc.core.tracking import write_summary
    from loravc.prepare.preparation import prepare, report

    prepared = prepare(args.data, params, AutoTokenizer.from_pretrained(args.tokenizer))
    data.write_splits(prepared.splits, args.out)
    data.write_info(args.out, prepared.info)
    write_summary(args.live, prepared.summary)
    print(report(prepared, params))


if __name__ == "__main__":
    run_main(main)
