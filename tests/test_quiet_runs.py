"""Quiet by default: what the dvc, stage and loravc processes of the session printed on stderr, a user can act on.

bench.project.run keeps the stderr of every such process the suite runs (conftest: STDERR_RECORDS): the default
pipeline on the real base, the tiny one with the options its tests set, the DoRA, PiSSA and QLoRA runs that
test_stage_imports adds, and the CLI's GGUF export. This test runs after them all (conftest) and fails on any line
of a run that succeeded outside ALLOWED. A failed run's error lines are its test's business. DVC itself prints
nothing on stderr in a successful init, repro, exp run, push or status, so no DVC line is allowed.
"""

import json
import re

import pytest
from conftest import STDERR_RECORDS

ALLOWED = [
    # the project's own warnings (warnings.warn in loravc/ or stages/, e.g. train.lora.modules_to_save's size):
    # a user can act on them; Python prints the warning's source line under it
    re.compile(r".*/(loravc|stages)/[\w/]+\.py:\d+: \w*Warning: .*"),
    # TRL's check that chat data trains the turn's end, which a user can fix: the tiny test base's tokenizer spells
    # <|im_end|> out of plain pieces, no token of its own (the shipped base has one: its runs never print this)
    re.compile(r"\[RANK \d+\] The chat template does not include the assistant turn's end-of-turn token .*"),
    # the project's own notes and warnings (`loravc list`: a version whose files are gone, no DVC remote set)
    re.compile(r"(note|warning): .*"),
    # torch's DDP (train.processes 2) says that no parameter went unused, so the graph traversal for them can go:
    # train.trainer.ddp_find_unused_parameters: false does it (the Trainer turns it on for any PEFT model)
    re.compile(r"\[rank\d+\]:\[W[\d :.]+reducer\.cpp:\d+\] Warning: find_unused_parameters=True was specified .*"),
]
"""Lines a successful run may print on stderr, whole (each with why)."""

PROJECT_WARNING = ALLOWED[0]


def unexplained(stderr: str) -> list[str]:
    """The lines of `stderr` outside ALLOWED, blank ones aside (a project warning's source line under it is its own)."""
    found, after_warning = [], False
    for line in stderr.splitlines():
        if after_warning and line.startswith("  "):  # the line of code a project warning names
            after_warning = False
            continue
        after_warning = bool(PROJECT_WARNING.fullmatch(line))
        if line.strip() and not any(allowed.fullmatch(line) for allowed in ALLOWED):
            found.append(line)
    return found


def test_library_noise_is_unexplained_and_the_projects_warnings_are_not() -> None:
    pissa = (
        "/venv/lib/python3.11/site-packages/peft/peft_model.py:1528: UserWarning: PiSSA changes the base weights\n"
        "  warnings.warn(msg)\n"
    )
    bar = "Loading weights:   0%|          | 0/21 [00:00<?, ?it/s]\rLoading weights: 100%|██████████| 21/21\n"
    ours = (
        "/tmp/repo/loravc/train/lora.py:225: UserWarning: train.lora.modules_to_save stores a whole trained copy\n"
        "  warnings.warn(\n\n"
    )
    assert unexplained(pissa) == pissa.splitlines()
    assert len(unexplained(bar)) == 2  # text mode reads a carriage return as a line break
    assert unexplained(ours) == []
    assert unexplained(ours + pissa) == pissa.splitlines()


def test_successful_runs_print_nothing_a_user_cannot_act_on() -> None:
    records = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(STDERR_RECORDS.glob("*.json"))]
    runs = [record for record in records if record["returncode"] == 0]
    if not runs:
        pytest.skip("no dvc, stage or loravc process ran in this session: run this with the pipeline tests")
    problems = []
    for run in runs:
        command = " ".join(run["argv"][1:])[:90]
        problems += [f"{command} (in {run['cwd']}): {line}" for line in unexplained(run["stderr"])]
    shown = "\n".join(problems[:40])
    assert not problems, f"{len(problems)} unexplained stderr lines in {len(runs)} successful runs:\n{shown}"
