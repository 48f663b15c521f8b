"""What the `loravc` verbs print, from records alone (no repository needed)."""

from pathlib import Path
from typing import Any

import pytest

from loravc.cli import render
from loravc.core.metadata import VersionMetadata

OLD_METADATA = Path(__file__).parents[1] / "fixtures" / "metadata"


def row(rev: str, **values: Any) -> dict[str, Any]:
    base = {
        "rev": rev,
        "branches": [],
        "tags": [],
        "experiments": [],
        "registry": [],
        "version_id": "v_20261128_101500",
        "created": "2026-11-28T10:15:00+00:00",
        "base_model": "tiny",
        "lora_r": 4,
        "data": {
            "source": "data/sums",
            "shape": "messages",
            "fixed_test": None,
            "train_records": 9,
            "validation_records": 4,
            "sha256": "0123456789abcdef",
        },
        "validation_loss": 3.19943,
        "test_perplexity": 29.7475,
        "adapter": {"path": "models/adapter", "md5": "ab.dir"},
        "error": None,
    }
    return base | values


def test_list_lines_up_columns_and_hides_unreadable_facts() -> None:
    rows = [
        row("a" * 40, branches=["main"], registry=["lora-adapter#prod"]),
        row("b" * 40, experiments=["rank-two"], lora_r=2, test_perplexity=None, error="metadata.json is damaged"),
    ]
    lines = render.list_table(rows).splitlines()
    assert lines[0].split() == " ".join(render.LIST_HEADER).split()
    first, second = lines[1], lines[2]
    facts = ["v_20261128_101500", "2026-11-28", "10:15", "tiny", "data/sums@01234567", "4", "-", "3.1994", "29.75"]
    facts += ["-"]  # no recipe beyond LoRA; the remote not asked
    assert first.split() == ["aaaaaaa", "main", "-", "lora-adapter#prod", *facts]
    assert second.split() == ["bbbbbbb", "rank-two", "-", "(unreadable:", "see", "below)"]
    assert first.index("lora-adapter#prod") == lines[0].index("registry")  # columns line up
    assert render.list_table([]) == render.NO_VERSIONS


def test_compare_shows_differences_and_b_minus_a() -> None:
    lora = {
        "ranks": [8],
        "rank_per_target": {"q_proj": [8]},
        "modules": 2,
        "target_modules": ["q_proj"],
        "alpha": 16,
        "scaling": [2.0],
        "trainable_parameters": 921600,
        "dtypes": ["F32"],
        "adapter_bytes": 3717656,
    }
    a = row("a" * 40) | {"lora_weights": lora}
    b = row("b" * 40, experiments=["rank-two"]) | {"lora_weights": lora | {"rank_per_target": {"q_proj": [2]}}}
    metrics = {"m.json:tuned_perplexity": [29.7344, 29.7475], "m.json:note": ["x", "y"]}
    text = render.compare({"a": a, "b": b, "params": {"train.lora.r": [8, 2]}, "metrics": metrics}, "main", "rank-two")
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert lines["revision"] == ["revision", "aaaaaaa", "bbbbbbb", "(rank-two)"]
    assert lines["rank"][-2:] == ["q_proj=8", "q_proj=2"]
    assert lines["train.lora.r"] == ["train.lora.r", "8", "2"]
    assert lines["m.json:tuned_perplexity"] == ["m.json:tuned_perplexity", "29.7344", "29.7475", "+0.0131"]
    assert lines["m.json:note"] == ["m.json:note", "x", "y"]  # no difference of strings
    assert "  (none)" not in text
    assert lines["data"] == ["data"] and lines["source"] == ["source", "data/sums", "data/sums"]  # same data
    assert lines["fixed"] == ["fixed", "test", "file", "-", "-"]
    other = b | {"data": b["data"] | {"source": "data/raw/pydoc_topics.jsonl", "sha256": "fedcba9876543210"}}
    text = render.compare({"a": a, "b": other, "params": {}, "metrics": {}}, "main", "rank-two")
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert lines["data"] == ["data", "differs"] and lines["source"] == [
        "source",
        "data/sums",
        "data/raw/pydoc_topics.jsonl",
    ]
    assert lines["splits"] == ["splits", "sha256", "0123456789abcdef", "fedcba9876543210"]
    assert "  (none)" in render.compare({"a": a, "b": a, "params": {}, "metrics": {}}, "main", "main")


def test_dora_rslora_and_whole_modules_are_named_from_the_weights() -> None:
    plain = {"ranks": [4], "alpha": 16, "target_modules": ["q_proj"], "modules": 2, "trainable_parameters": 9}
    dora = {"modules": 2, "magnitude_mean": 1.23456, "magnitude_min": 0.5, "magnitude_max": 2.0}
    tuned = plain | {"use_rslora": True, "dora": dora, "modules_to_save": {"lm_head": 1024}}
    assert render.variant(plain) == "-" and render.saved_modules(plain) == "-"
    assert render.lora_line(plain).endswith("9 trainable parameters)")
    assert render.variant(tuned) == "rsLoRA, DoRA magnitude mean 1.235 [0.5, 2] over 2 modules"
    assert render.lora_line(tuned).endswith(
        "; rsLoRA, DoRA magnitude mean 1.235 [0.5, 2] over 2 modules; whole lm_head (1,024 B)"
    )


def test_verify_prints_one_ok_line_per_check() -> None:
    report = {
        "rev": "c" * 40,
        "version_id": "v_20261128_101500",
        "files": {"models/adapter": {"files": 6, "found": "ab.dir"}, "models/base": {"files": 5, "found": "cd.dir"}},
        "loads": {"device": "cpu", "probe_tokens": 17},
        "eval": {"measured": 29.75, "recorded": 29.7475, "relative_difference": 8.4e-5, "tolerance": 1e-3},
    }
    lines = render.verify(report).splitlines()
    assert lines[0] == "verify v_20261128_101500 (ccccccc)"
    assert lines[1:] == [
        "  ok  models/adapter: 6 files hash to ab.dir, as dvc.lock records",
        "  ok  models/base: 5 files hash to cd.dir, as dvc.lock records",
        "  ok  loads on cpu: finite logits for a 17-token probe",
        "  ok  test perplexity 29.75 vs recorded 29.7475 (difference 8.40e-05 <= 1e-03 relative)",
    ]


LOCK = {"locks/cpu.txt": "9774c3cee439" + "0" * 52, "locks/qlora.txt": "101b482a4caa" + "1" * 52}


def shown(metadata: dict[str, Any], environment_lock: dict[str, str] | None) -> list[str]:
    """`loravc show`'s lines for a version with this metadata.json, seen from an environment set up from these locks."""
    lora = {"ranks": [4], "alpha": 16, "target_modules": ["q_proj"], "modules": 2, "trainable_parameters": 9}
    info = row("a" * 40) | {"metadata": metadata, "metrics": {}, "params": {}, "lora_weights": lora, "base": None}
    return render.show(info | {"environment_lock": environment_lock}).splitlines()


def lock_rows(lines: list[str]) -> list[str]:
    """The rows of show's table from its `lock` row on (the table's last rows), stripped."""
    rows = lines[: lines.index("")]
    return [line.strip() for line in rows[next(i for i, line in enumerate(rows) if line.startswith("lock ")) :]]


@pytest.fixture(params=["62c3ebc846f7a2f40f5627080b87a1a2", "7458874aa3c655880c0bd6a9816cb349"])
def metadata(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The metadata.json of a committed version from before the lock record: the first (schema 1), and a later one."""
    return VersionMetadata.from_json((OLD_METADATA / f"{request.param}.json").read_bytes()).to_dict()


def test_show_names_the_lock_a_version_was_made_under(metadata: dict[str, Any]) -> None:
    assert lock_rows(shown(metadata | {"lock": LOCK}, LOCK)) == [
        "lock          locks/cpu.txt sha256 9774c3cee439, locks/qlora.txt sha256 101b482a4caa"
    ]


def test_show_says_when_this_environment_was_set_up_from_another_lock(metadata: dict[str, Any]) -> None:
    here = {"locks/cpu.txt": "5" * 64}  # another locks/cpu.txt, and no bitsandbytes
    assert lock_rows(shown(metadata | {"lock": LOCK}, here)) == [
        "lock          locks/cpu.txt sha256 9774c3cee439, locks/qlora.txt sha256 101b482a4caa",
        "made under another lock than this environment's (locks/cpu.txt sha256 555555555555): libraries may differ",
    ]


@pytest.mark.parametrize("here", [LOCK, None], ids=["set up from a lock", "set up otherwise"])
def test_show_says_nothing_alarming_of_a_version_from_before_locks(
    metadata: dict[str, Any], here: dict[str, str] | None
) -> None:
    assert metadata["lock"] is None
    assert lock_rows(shown(metadata, here)) == ["lock          -"]


def test_show_of_a_version_made_outside_a_set_up_environment_compares_nothing(metadata: dict[str, Any]) -> None:
    assert len(lock_rows(shown(metadata | {"lock": LOCK}, None))) == 1
