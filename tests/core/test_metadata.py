"""metadata.json: one typed schema, every file ever written still readable, every bad field named."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from loravc.core.errors import UserError
from loravc.core.metadata import (
    LIBRARIES,
    LOCK_RECORD,
    METADATA_FILE,
    SCHEMA_VERSION,
    VersionMetadata,
    environment_lock,
    library_versions,
    read_metadata,
    write_metadata,
)
from loravc.core.schema import parse_yaml
from loravc.versions.cache import DvcCache
from loravc.versions.gitrepo import GitRepo
from loravc.versions.pins import Out, parse_pins

ROOT = Path(__file__).resolve().parents[2]

CURRENT: dict[str, Any] = {
    "schema_version": SCHEMA_VERSION,
    "version_id": "v_20261128_101500",
    "created": "2026-11-28T10:15:00+00:00",
    "started": "2026-11-28T10:13:02+00:00",
    "base_model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "sha256": "b179c952", "parameters": 134515008},
    "lora": {
        "r": 4,
        "alpha": 16,
        "dropout": 0.05,
        "bias": "none",
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "trainable_parameters": 460800,
        "dtype": "float32",
        "options": {"use_dora": True},
    },
    "data": {
        "sha256": "ab12",
        "train_records": 160,
        "validation_records": 24,
        "source": "data/raw/pydoc_topics.jsonl",
        "shape": "text",
        "fixed_test": None,
        "files": {"data/raw/pydoc_topics.jsonl": "cd34"},
    },
    "training": {
        "seed": 42,
        "device": "cpu",
        "max_length": 128,
        "trainer": {"learning_rate": 0.0002},
        "resumed_from_step": None,
        "loss_on": "all",
        "chat_template": None,
        "precision": "bf16 autocast (avx512_bf16)",
        "attention": "sdpa_varlen",
        "early_stopping": None,
        "quantization": {"bits": 4, "bitsandbytes": "0.50.2", "quant_type": "nf4", "double_quant": True},
        "distributed": None,
    },
    "metrics": {
        "train_loss": 3.1816,
        "validation_loss": 3.1994,
        "steps": 28,
        "epochs": 1.0,
        "train_tokens": 16384,
        "train_seconds": 125.89,
    },
    "code": {"commit": "3845a5e" + "0" * 33, "dirty": False},
    "libraries": {"torch": "2.13.0", "trl": "1.16.0", "liger_kernel": None},
    "lock": {"locks/cpu.txt": "9774c3ce" + "0" * 56, "locks/qlora.txt": "101b482a" + "1" * 56},
    "world_size": 1,
}


def with_changes(**changes: Any) -> dict[str, Any]:
    record = copy.deepcopy(CURRENT)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = record
        for parent in parents:
            node = node[parent]
        if value is KeyError:
            del node[key]
        else:
            node[key] = value
    return record


def test_the_current_layout_round_trips_unchanged() -> None:
    meta = VersionMetadata.from_dict(CURRENT)
    assert meta.lora.r == 4 and meta.metrics.validation_loss == 3.1994 and meta.code.dirty is False
    assert meta.to_dict() == CURRENT and list(meta.to_dict()) == list(CURRENT)  # same keys, same order
    assert json.loads(meta.to_json()) == CURRENT


def test_a_file_without_schema_version_is_schema_1_and_keeps_its_gaps() -> None:
    old = with_changes(schema_version=KeyError, started=KeyError, world_size=KeyError, lora__dtype=KeyError)
    for key in ("source", "shape", "fixed_test", "files"):
        del old["data"][key]
    meta = VersionMetadata.from_dict(old)
    assert meta.schema_version == 1
    assert meta.started is None and meta.world_size is None and meta.lora.dtype is None and meta.data.shape is None


def test_a_file_from_before_the_lock_record_reads_with_none() -> None:
    meta = VersionMetadata.from_dict(with_changes(lock=KeyError))
    assert meta.lock is None and meta.libraries["trl"] == "1.16.0"
    assert VersionMetadata.from_dict(meta.to_dict()) == meta


def test_library_versions_are_read_without_importing_and_a_missing_one_is_none() -> None:
    from importlib.metadata import version

    found = library_versions(("pytest", "no-such-package-here"))
    assert found == {"pytest": version("pytest"), "no-such-package-here": None}
    assert list(library_versions()) == list(LIBRARIES)  # a version records each of these


def test_the_environment_lock_is_what_setup_recorded_in_the_environment(tmp_path: Path) -> None:
    """scripts/setup.sh writes <.venv>/loravc-lock.json; an environment set up otherwise has none."""
    assert environment_lock(tmp_path) is None
    record = {"locks/cpu.txt": "ab" * 32, "locks/qlora.txt": "cd" * 32}
    (tmp_path / LOCK_RECORD).write_text(json.dumps(record), encoding="utf-8")
    assert environment_lock(tmp_path) == record
    for damaged in ("{", "[1]", '{"locks/cpu.txt": 5}'):
        (tmp_path / LOCK_RECORD).write_text(damaged, encoding="utf-8")
        assert environment_lock(tmp_path) is None


def test_unknown_keys_are_kept_and_written_back() -> None:
    record = with_changes(future_section={"a": 1}, lora__use_dora=True)
    meta = VersionMetadata.from_dict(record)
    assert meta.extra == {"future_section": {"a": 1}} and meta.lora.extra == {"use_dora": True}
    assert meta.to_dict() == record


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version_id": 5}, "version_id must be a string, got 5"),
        ({"version_id": "latest"}, "version_id 'latest' is not of the form v_YYYYMMDD_HHMMSS"),
        ({"created": "yesterday"}, "created 'yesterday' is not an ISO 8601 time"),
        ({"lora": "x"}, "lora must be a mapping"),
        ({"lora__r": "four"}, "lora.r must be an integer, got 'four'"),
        ({"lora__r": KeyError}, "lora.r is missing"),
        ({"metrics__validation_loss": None}, "metrics.validation_loss must be a number, got None"),
        ({"base_model": {"name": "x"}}, "base_model.id must be a string"),
        ({"schema_version": SCHEMA_VERSION + 1}, "newer than this code reads"),
    ],
)
def test_a_bad_field_is_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError) as err:
        VersionMetadata.from_dict(with_changes(**changes))
    assert message in str(err.value)


def test_reading_a_version_directory_names_the_file_and_the_fix(tmp_path: Path) -> None:
    write_metadata(tmp_path, VersionMetadata.from_dict(CURRENT))
    assert read_metadata(tmp_path).to_dict() == CURRENT
    path = tmp_path / "metadata.json"
    path.write_text('{"version_id": 5, "created": "yesterday", "lora": "x"}', encoding="utf-8")
    with pytest.raises(UserError, match=rf"{path} is damaged \(.*\): restore it with `dvc checkout`"):
        read_metadata(tmp_path)
    path.write_text('{"version_id": "v_2026', encoding="utf-8")
    with pytest.raises(UserError, match=r"is damaged \(Unterminated string starting at line 1, column 16\)"):
        read_metadata(tmp_path)
    path.unlink()
    with pytest.raises(UserError, match=r"metadata\.json is missing"):
        read_metadata(tmp_path)


FIXTURES = Path(__file__).parents[1] / "fixtures" / "metadata"


def committed_versions() -> dict[str, str]:
    """{adapter md5: first commit pinning it} for every commit of this repository that changes dvc.lock."""
    repo = GitRepo(ROOT)
    if repo.git("rev-parse", "--is-shallow-repository").strip() == "true":
        pytest.fail("this clone is shallow: `git fetch --unshallow` to test every committed version")
    found: dict[str, str] = {}
    for commit in repo.commits_changing(["HEAD"], "dvc.lock"):
        dvc_yaml, dvc_lock = (repo.read_blob(commit, name) for name in ("dvc.yaml", "dvc.lock"))
        pins = parse_pins(parse_yaml(dvc_yaml), parse_yaml(dvc_lock)) if dvc_yaml and dvc_lock else None
        if pins is not None:
            found.setdefault(pins.adapter.md5.removesuffix(".dir"), commit)
    return found


def test_every_version_committed_to_this_repository_still_reads() -> None:
    versions = committed_versions()
    assert len(versions) >= 7  # the history holds at least the seven versions pinned on 2026-11-26
    cache = DvcCache(ROOT)
    for md5, commit in versions.items():
        real = (
            cache.path_of(Out("models/adapter", f"{md5}.dir"), METADATA_FILE)
            if (ROOT / ".dvc/cache").is_dir()
            else None
        )
        source = real or FIXTURES / f"{md5}.json"
        assert source.is_file(), (
            f"version {md5} (commit {commit[:7]}) has no metadata to test: "
            f"cp models/adapter/metadata.json {source.relative_to(ROOT)} (see {FIXTURES.relative_to(ROOT)}/README.md)"
        )
        meta = VersionMetadata.from_json(source.read_bytes())
        assert meta.metrics.steps >= 1 and meta.lora.r >= 1, source
        assert VersionMetadata.from_dict(meta.to_dict()) == meta  # and writes back losslessly


def test_no_fixture_is_left_without_its_version() -> None:
    assert {p.stem for p in FIXTURES.glob("*.json")} <= set(committed_versions())


def test_new_version_ids_carry_a_random_suffix_from_an_injectable_source(monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets
    from datetime import UTC, datetime, timedelta, timezone

    from loravc.core.metadata import VERSION_ID_RE, version_id

    now = datetime(2026, 11, 26, 8, 57, 15, tzinfo=UTC)
    assert version_id(now, suffix="a1b2c3") == "v_20261126_085715_a1b2c3"
    assert version_id(now.astimezone(timezone(timedelta(hours=2))), suffix="a1b2c3") == "v_20261126_085715_a1b2c3"
    drawn = iter(["00ff00", "0a0b0c"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(drawn) if n == 3 else "wrong length asked")
    assert [version_id(now), version_id(now)] == ["v_20261126_085715_00ff00", "v_20261126_085715_0a0b0c"]
    for bad in ("A1B2C3", "a1b2c", "a1b2c3d", "g1b2c3", ""):
        with pytest.raises(ValueError, match="6 lowercase hex digits"):
            version_id(now, suffix=bad)
    monkeypatch.undo()
    assert VERSION_ID_RE.fullmatch(version_id(now))  # the real random source gives a valid id


@pytest.mark.parametrize("vid", ["v_20261126_085715", "v_20261126_085715_a1b2c3"])
def test_old_and_new_version_ids_both_validate(vid: str) -> None:
    assert VersionMetadata.from_dict(with_changes(version_id=vid)).version_id == vid


@pytest.mark.parametrize("vid", ["v_20261126_085715_", "v_20261126_085715_A1B2C3", "v_20261126_085715_a1b2c", "v_2026"])
def test_malformed_version_ids_are_refused(vid: str) -> None:
    with pytest.raises(UserError, match="is not of the form v_YYYYMMDD_HHMMSS"):
        VersionMetadata.from_dict(with_changes(version_id=vid))


# --- code.commit / code.dirty: the train stage's code against HEAD --------------------------------

TRAIN_DVC_YAML = """\
stages:
  prepare:
    cmd: python prepare.py
    deps: [prepare.py]
  train:
    cmd: python -m stages.train
    deps:
      - stages/train.py
      - lib/model.py
      - ${data.train}
      - models/base
    params: [train]
"""


@pytest.fixture
def code_repo(tmp_path: Path) -> Path:
    """A git repository whose dvc.yaml names stages/train.py and lib/model.py as the train stage's code; one commit."""
    from bench.project import git

    repo = tmp_path / "code"
    files = {
        "dvc.yaml": TRAIN_DVC_YAML,
        "dvc.lock": "schema: '2.0'\n",
        "params.yaml": "train:\n  lora:\n    r: 4\n",
        "stages/train.py": "print('train')\n",
        "lib/model.py": "R = 4\n",
        "prepare.py": "print('prepare')\n",
        "dvclive/train/metrics.json": '{"train_loss": 3.0}\n',
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text, encoding="utf-8")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "code")
    return repo


def test_code_is_clean_at_head_and_names_no_files(code_repo: Path) -> None:
    from bench.project import git
    from loravc.core.metadata import git_revision

    code = git_revision(code_repo)
    assert code.commit == git(code_repo, "rev-parse", "HEAD") and len(code.commit) == 40
    assert code.dirty is False and code.extra == {"dirty_files": []}


def test_what_every_dvc_run_changes_does_not_make_the_code_dirty(code_repo: Path) -> None:
    from loravc.core.metadata import git_revision

    (code_repo / "params.yaml").write_text("train:\n  lora:\n    r: 8\n", encoding="utf-8")  # dvc exp run -S
    (code_repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    (code_repo / "dvclive/train/metrics.json").unlink()  # a stage's outputs, removed before it runs
    (code_repo / "dvclive/evaluate").mkdir(parents=True)
    (code_repo / "dvclive/evaluate/metrics.json").write_text("{}\n", encoding="utf-8")
    (code_repo / "prepare.py").write_text("print('another stage')\n", encoding="utf-8")  # not train's code
    code = git_revision(code_repo)
    assert code.dirty is False and code.extra["dirty_files"] == []


def test_an_edited_staged_deleted_or_new_train_code_file_is_dirty_and_named(code_repo: Path) -> None:
    from bench.project import git
    from loravc.core.metadata import git_revision

    (code_repo / "lib/model.py").write_text("R = 8\n", encoding="utf-8")
    code = git_revision(code_repo)
    assert code.dirty is True and code.extra["dirty_files"] == ["lib/model.py"]
    git(code_repo, "add", "lib/model.py")  # staged but not committed: still not HEAD's code
    (code_repo / "stages/train.py").unlink()
    assert git_revision(code_repo).extra["dirty_files"] == ["lib/model.py", "stages/train.py"]
    git(code_repo, "checkout", "HEAD", "--", "lib/model.py", "stages/train.py")
    assert git_revision(code_repo).dirty is False
    dvc_yaml = (code_repo / "dvc.yaml").read_text(encoding="utf-8")
    (code_repo / "dvc.yaml").write_text(dvc_yaml.replace("- lib/model.py", "- lib/model.py\n      - lib/new.py"))
    (code_repo / "lib/new.py").write_text("NEW = 1\n", encoding="utf-8")  # listed, never committed
    assert git_revision(code_repo).extra["dirty_files"] == ["lib/new.py"]


def test_git_revision_from_a_subdirectory_reads_the_root_dvc_yaml(code_repo: Path) -> None:
    from loravc.core.metadata import git_revision

    (code_repo / "lib/model.py").write_text("R = 8\n", encoding="utf-8")
    assert git_revision(code_repo / "stages").extra["dirty_files"] == ["lib/model.py"]


def test_outside_a_git_repository_commit_and_dirty_are_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loravc.core.metadata import CodeRecord, git_revision

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # a tmp_path inside some repo stays outside it
    (tmp_path / "dvc.yaml").write_text(TRAIN_DVC_YAML, encoding="utf-8")
    assert git_revision(tmp_path) == CodeRecord(commit=None, dirty=None)


def test_dirty_files_round_trip_through_metadata_json(code_repo: Path) -> None:
    from loravc.core.metadata import git_revision

    (code_repo / "lib/model.py").write_text("R = 8\n", encoding="utf-8")
    meta = VersionMetadata.from_dict(CURRENT)
    meta.code = git_revision(code_repo)
    written = json.loads(meta.to_json())["code"]
    assert written["dirty"] is True and written["dirty_files"] == ["lib/model.py"]
    assert VersionMetadata.from_json(meta.to_json()).code.extra == {"dirty_files": ["lib/model.py"]}
