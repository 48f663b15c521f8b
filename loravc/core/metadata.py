"""metadata.json: what a version is, where it came from, and how well it did.

`VersionMetadata` is the one typed form of that file: the train stage writes it, everything else
(evaluate, the version catalogue, the registry, the CLI) reads it through `from_json`, which checks
every field and names the first bad one. `schema_version` says which layout a file has:
  1  every file written before the field existed (2026-11-26): read as is; some keys may be absent
  2  adds `schema_version` itself; keys as in 1 (later keys, such as `lock`, are optional: absent in older files)
A file from a newer schema than this code knows is refused with a message to update the code.
Keys this code does not know are kept (`extra`) and written back unchanged.
"""

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.core.schema import build

METADATA_FILE = "metadata.json"
SCHEMA_VERSION = 2
LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "dvc", "dvclive", "safetensors")
LOCK_RECORD = "loravc-lock.json"  # in the environment (.venv): the locks scripts/setup.sh installed, with their sha256
VERSION_ID_RE = re.compile(r"v_\d{8}_\d{6}(_[0-9a-f]{6})?")  # v_<UTC time>_<6 hex>; older ids lack the suffix


@dataclass
class LoraRecord:
    """The adapter's configuration (train.lora as trained) and its trainable parameter count."""

    r: int
    alpha: int
    dropout: float
    bias: str
    target_modules: list[str]
    trainable_parameters: int | None = None
    dtype: str | None = None  # of the saved LoRA tensors, e.g. "float32"; absent before 2026-11-26 (fp32)
    options: dict[str, Any] = field(default_factory=dict)  # other peft.LoraConfig options (use_dora, ...); {} before
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataRecord:
    sha256: str  # of the prepared train + validation files
    train_records: int
    validation_records: int
    source: str | None = None  # params.yaml data.train (absent before 2026-11-28)
    shape: str | None = None  # text, prompt-completion, messages or chat-prompt-completion
    fixed_test: str | None = None  # the fixed test file, None: the test split was drawn by prepare.seed
    files: dict[str, str] | None = None  # each source file's sha256
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingRecord:
    seed: int
    device: str
    max_length: int
    trainer: dict[str, Any]  # the effective SFTConfig arguments worth keeping
    resumed_from_step: int | None = None
    loss_on: str | None = None  # all, completion or assistant tokens (absent before 2026-11-28)
    chat_template: str | None = None  # the marked template trained with: base, trl:<sha256[:12]>, loravc:<family>
    precision: str | None = None  # "fp32", "bf16 autocast (avx512_bf16|amx|cuda|emulated)" (absent before 2026-11-29)
    attention: str | None = None  # the attention implementation, e.g. "eager", "sdpa" (absent before 2026-11-29)
    early_stopping: dict[str, Any] | None = None  # train.early_stopping's outcome: best and stop step, why
    quantization: dict[str, Any] | None = None  # train.quantization: bits, type, compute dtype, bitsandbytes
    # accelerate's distributed type of a multi-process run: FSDP, MULTI_CPU (DDP over gloo), MULTI_GPU (DDP), ...
    distributed: str | None = None  # None: one process (absent before 2026-11-29)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainMetrics:
    train_loss: float
    validation_loss: float
    steps: int
    epochs: float
    train_tokens: int | None = None
    train_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CodeRecord:
    commit: str | None = None  # git HEAD of the code that trained the version
    dirty: bool | None = None  # whether the train stage's *.py deps differ from HEAD (names: extra["dirty_files"])
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class VersionMetadata:
    version_id: str  # v_<UTC timestamp of the end of training>_<6 random hex digits>
    created: str  # ISO 8601, UTC
    base_model: dict[str, Any]  # identity of the base: id, source, sha256/revision, weights_sha256, ...
    lora: LoraRecord
    data: DataRecord
    training: TrainingRecord
    metrics: TrainMetrics
    code: CodeRecord
    libraries: dict[str, Any]  # package -> version (None: not installed)
    lock: dict[str, str] | None = None  # {lock file: sha256} that set up the environment (absent before 2026-12-07)
    started: str | None = None
    world_size: int | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not VERSION_ID_RE.fullmatch(self.version_id):
            raise UserError(
                f"version_id {self.version_id!r} is not of the form v_YYYYMMDD_HHMMSS_xxxxxx "
                "(or the older v_YYYYMMDD_HHMMSS)"
            )
        for key in ("created", "started"):
            value = getattr(self, key)
            try:
                if value is not None:
                    datetime.fromisoformat(value)
            except ValueError:
                raise UserError(f"{key} {value!r} is not an ISO 8601 time") from None
        if not isinstance(self.base_model.get("id"), str):
            raise UserError("base_model.id must be a string")
        if self.schema_version > SCHEMA_VERSION:
            raise UserError(
                f"schema_version {self.schema_version} is newer than this code reads ({SCHEMA_VERSION}): "
                "update the project (git pull) to read this version"
            )

    @classmethod
    def from_dict(cls, data: Any) -> "VersionMetadata":
        """Validate a parsed metadata.json; a file without schema_version is schema 1."""
        if isinstance(data, dict) and "schema_version" not in data:
            data = {**data, "schema_version": 1}
        return _build(cls, data, "")

    @classmethod
    def from_json(cls, text: str | bytes) -> "VersionMetadata":
        """Parse and validate metadata.json text; ValueError (json's, or UserError's text) says what is wrong."""
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout: schema_version first, then the fields in a fixed order, unknown keys last."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for name in ORDER:
            value = getattr(self, name)
            if hasattr(value, "extra"):
                value = {k: v for k, v in vars(value).items() if k != "extra"} | value.extra
            out[name] = value
        return out | self.extra

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


ORDER = ("version_id", "created", "started", "base_model", "lora", "data", "training", "metrics", "code")
ORDER += ("libraries", "lock", "world_size")


def _build(cls: type, data: Any, prefix: str) -> Any:
    return build(cls, data, prefix, extra="extra")


def version_id(now: datetime, suffix: str | None = None) -> str:
    """A new version's id: v_<UTC timestamp>_<6 random hex digits>, sortable by time, unique by construction.

    The random part (`secrets.token_hex(3)`; pass `suffix` for a fixed one) keeps apart two runs that finish
    in the same second, and two trainings of byte-identical adapters.
    """
    import secrets

    if suffix is None:
        suffix = secrets.token_hex(3)
    if not re.fullmatch(r"[0-9a-f]{6}", suffix):
        raise ValueError(f"a version id suffix is 6 lowercase hex digits, got {suffix!r}")
    return "v_" + now.astimezone(UTC).strftime("%Y%m%d_%H%M%S") + "_" + suffix


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def git_revision(cwd: Path | None = None) -> CodeRecord:
    """HEAD of the code that trained the version, and whether the train stage's code differs from it.

    `dirty` is about code only: whether any *.py file dvc.yaml (at the repository root) lists under
    `stages.train.deps`, itself or in a listed directory of code, differs from HEAD (edited, staged,
    deleted, or not committed at all);
    `extra["dirty_files"]` names those files. params.yaml, dvc.lock and dvclive's files, which every
    `dvc repro` and `dvc exp run` changes, do not count. Outside a git repository (or before its first
    commit) everything is None; `dirty` is None when dvc.yaml names no train stage to check.
    """
    try:
        root = Path(_git(cwd, "rev-parse", "--show-toplevel"))
        commit = _git(root, "rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return CodeRecord()
    files = train_code_files(root)
    if files is None:
        return CodeRecord(commit, None)
    try:
        changed = _changed_files(root, files)
    except (OSError, subprocess.CalledProcessError):
        return CodeRecord(commit, None)
    return CodeRecord(commit, bool(changed), extra={"dirty_files": changed})


def train_code_files(root: Path) -> list[str] | None:
    """The code the train stage of root/dvc.yaml depends on, relative to root: its *.py files and the directories
    that hold *.py files (loravc/train); None without a train stage."""
    import posixpath

    from loravc.core.schema import read_yaml

    try:
        stage = read_yaml(root / "dvc.yaml")["stages"]["train"]
        deps, wdir = stage.get("deps") or [], stage.get("wdir") or "."
    except Exception:  # no dvc.yaml, not YAML, no train stage: nothing says which files are code
        return None
    if not isinstance(deps, list):
        return None
    paths = {posixpath.normpath(posixpath.join(wdir, d)) for d in deps if isinstance(d, str) and "${" not in d}
    return sorted(p for p in paths if p.endswith(".py") or _holds_code(root / p))


def _holds_code(path: Path) -> bool:
    return path.is_dir() and next(path.rglob("*.py"), None) is not None


def _changed_files(root: Path, files: list[str]) -> list[str]:
    """The *.py files among `files` (relative to root; a directory: those in it) whose working copy differs
    from HEAD, untracked ones included."""
    if not files:
        return []
    out = _git(
        root,
        "--literal-pathspecs",
        "--no-optional-locks",
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=all",
        "--no-renames",
        "--",
        *files,
        strip=False,
    )
    return sorted({entry[3:] for entry in out.split("\0") if entry.endswith(".py")})


def _git(cwd: Path | None, *args: str, strip: bool = True) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout
    return out.strip() if strip else out


def library_versions(packages: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """The installed version of each package (None where it is not installed), read without importing it."""
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def environment_lock(prefix: str | Path | None = None) -> dict[str, str] | None:
    """The locks this Python environment (default: the running one) was set up from, {lock file: sha256}, as
    scripts/setup.sh records them in <environment>/loravc-lock.json; None for an environment set up otherwise."""
    path = Path(sys.prefix if prefix is None else prefix) / LOCK_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not all(isinstance(v, str) for v in record.values()):
        return None
    return record


def write_json(directory: Path, record: dict[str, Any]) -> Path:
    """Write a metadata.json (a version's, or another record such as a merge's) into `directory`."""
    path = directory / METADATA_FILE
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def write_metadata(version_dir: Path, metadata: VersionMetadata) -> Path:
    return write_json(version_dir, metadata.to_dict())


def read_metadata(version_dir: Path) -> VersionMetadata:
    """Read a version's metadata; a missing, damaged or invalid file names itself and the fix."""
    path = version_dir / METADATA_FILE
    fix = "restore it with `dvc checkout` (or `dvc pull` if the cache lacks it)"
    try:
        return VersionMetadata.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing: {fix}") from None
    except (ValueError, UserError) as err:
        raise UserError(f"{path} is damaged ({describe_problem(err)}): {fix}") from None


def describe_problem(err: Exception) -> str:
    """What is wrong with a metadata file, from the error `VersionMetadata.from_json` raised."""
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg.removesuffix(' at')} at line {err.lineno}, column {err.colno}"
    return str(err)
