"""Every model version of this repository: find them, resolve a reference, read, load, export, merge, verify.

A version is the adapter directory (the `artifacts:` path in dvc.yaml, `models/adapter`) as a
commit's dvc.lock pins it, on a branch, a tag or a DVC experiment ref. Everything is read at that
revision from git (dvc.yaml, dvc.lock, metrics files) and from DVC's cache, fetching from the DVC
remote when the cache lacks it; nothing is checked out and the workspace is never touched.
Directories a version needs (adapter, base, prepared data) are assembled from the cache under
`.dvc/tmp/loravc/<md5>/` (hard links where possible) and reused.

Nothing here imports torch until a model is loaded, so listing and showing versions is quick.
"""

import difflib
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from loravc.errors import UserError
from loravc.metadata import METADATA_FILE, utc_now, write_metadata
from loravc.params import EvaluateParams, TrainParams, flatten
from loravc.params import parse_yaml as parse_yaml_text

ARTIFACT = "lora-adapter"  # the model artifact in dvc.yaml, when it declares several
STORE_ENV = "LORAVC_STORE"  # where materialized directories go (default: .dvc/tmp/loravc)
LIST_HINT = "run `loravc list` to see every version"
PULL = "run `dvc pull` (`dvc fetch --all-commits` for older versions) with the remote that holds it"
EXPORT_DIR = "model_versions"  # git-ignored home of exported versions
MERGE_TOLERANCE = 1e-4  # max |logit difference| between merged weights and base + adapter (fp32)
EVAL_TOLERANCE = 1e-3  # relative difference allowed between re-computed and recorded test perplexity

# A version reference: letters, digits and . _ / @ # + ~ ^ -; never an option, a path escape or git's
# rev:path / @{...} syntax. Checked before anything reaches git or the filesystem.
REF_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/@#+~^-]{0,199}")
VERSION_ID_RE = re.compile(r"v_\d{8}_\d{6}")
REGISTRY_RE = re.compile(r"[A-Za-z0-9][\w/-]*[A-Za-z0-9](#[\w/-]+|@(v\d+\.\d+\.\d+\S*|latest|greatest))")
# DVC's experiment refs: refs/exps/<baseline sha[:2]>/<baseline sha[2:]>/<name> (dvc.repo.experiments.refs)
EXP_REF_RE = re.compile(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/[^/]+")


def check_ref(ref: str) -> str:
    """`ref` if it is a well-formed version reference, else a UserError (nothing has run yet)."""
    if not REF_RE.fullmatch(ref) or ".." in ref or "//" in ref or "/." in ref or ref.endswith(("/", ".", ".lock")):
        raise UserError(
            f"{ref!r} is not a version reference: use a git revision, branch, tag, experiment name, "
            "version id (v_YYYYMMDD_HHMMSS) or registry reference (lora-adapter@v1.2.0, lora-adapter#prod); "
            + LIST_HINT
        )
    return ref


@dataclass(frozen=True)
class Ref:
    """A name that points at a commit: a branch, tag, experiment, registry version or stage."""

    kind: str  # branch, tag, experiment, registry, stage
    name: str
    commit: str


@dataclass(frozen=True)
class Out:
    """A DVC-tracked directory as one dvc.lock records it."""

    path: str
    md5: str  # DVC's directory hash, "<md5>.dir"


@dataclass(frozen=True)
class Pins:
    """What a commit's dvc.yaml and dvc.lock say about the version it holds."""

    adapter: Out
    base: Out | None  # the train stage's --base
    data: Out | None  # the evaluate stage's --data (prepared splits)
    evaluated: str | None  # the adapter hash the evaluate stage ran on
    eval_metrics: str | None  # the evaluate stage's metrics file
    metrics_files: tuple[str, ...]
    params: dict[str, Any]  # flattened params recorded in dvc.lock (what the stages actually used)


@dataclass
class Version:
    """One version: its pins at a commit, the names pointing at it, and what was read about it."""

    rev: str  # the commit this version is read at
    pins: Pins
    refs: list[Ref] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # flattened, "<file>:<key>"

    @property
    def short(self) -> str:
        return self.rev[:7]

    def names(self, *kinds: str) -> list[str]:
        return [r.name for r in self.refs if r.kind in kinds]

    @property
    def version_id(self) -> str | None:
        return (self.metadata or {}).get("version_id")

    @property
    def test_perplexity(self) -> float | None:
        """The evaluate stage's fine-tuned perplexity, if it ran on exactly this adapter."""
        if self.pins.eval_metrics is None or self.pins.evaluated != self.pins.adapter.md5:
            return None
        return self.metrics.get(f"{self.pins.eval_metrics}:tuned_perplexity")

    def row(self) -> dict[str, Any]:
        meta = self.metadata or {}
        return {
            "rev": self.rev,
            "branches": self.names("branch"),
            "tags": self.names("tag"),
            "experiments": self.names("experiment"),
            "registry": self.names("registry", "stage"),
            "version_id": self.version_id,
            "created": meta.get("created"),
            "base_model": (meta.get("base_model") or {}).get("id"),
            "lora_r": (meta.get("lora") or {}).get("r"),
            "validation_loss": (meta.get("metrics") or {}).get("validation_loss"),
            "test_perplexity": self.test_perplexity,
            "adapter": {"path": self.pins.adapter.path, "md5": self.pins.adapter.md5},
            "error": self.error,
        }


def parse_yaml(text: bytes | None) -> Any:
    """Parse a git blob as DVC parses YAML; None for a file the commit lacks."""
    return None if text is None else parse_yaml_text(text)


def _arg(cmd: Any, flag: str) -> str | None:
    """The value of `flag` in a stage command (dvc.lock stores it as a string or a list)."""
    tokens = [t for part in (cmd if isinstance(cmd, list) else [cmd]) for t in shlex.split(str(part))]
    for i, token in enumerate(tokens):
        if token == flag and i + 1 < len(tokens):
            return tokens[i + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    return None


def _entry(entries: list[dict[str, Any]] | None, path: str | None) -> Out | None:
    for entry in entries or []:
        if path is not None and entry.get("path") == path and str(entry.get("md5", "")).endswith(".dir"):
            return Out(path, entry["md5"])
    return None


def parse_pins(dvc_yaml: Any, dvc_lock: Any) -> Pins | None:
    """The version a commit holds, from its dvc.yaml and dvc.lock; None if it has no trained adapter."""
    if not isinstance(dvc_yaml, dict) or not isinstance(dvc_lock, dict):
        return None
    locked = dvc_lock.get("stages") or {}
    train, evaluate = locked.get("train") or {}, locked.get("evaluate") or {}
    models = {
        name: spec.get("path")
        for name, spec in (dvc_yaml.get("artifacts") or {}).items()
        if isinstance(spec, dict) and spec.get("type", "model") == "model"
    }
    path = models.get(ARTIFACT) or (next(iter(models.values())) if len(models) == 1 else None)
    adapter = _entry(train.get("outs"), path or _arg(train.get("cmd"), "--out"))
    if adapter is None:
        return None
    base = _entry(train.get("deps"), _arg(train.get("cmd"), "--base"))
    data = _entry(evaluate.get("deps"), _arg(evaluate.get("cmd"), "--data"))
    evaluated = _entry(evaluate.get("deps"), adapter.path)
    metrics: list[str] = []
    eval_metrics = None
    for name, stage in (dvc_yaml.get("stages") or {}).items():
        for item in (stage or {}).get("metrics") or []:
            file = next(iter(item)) if isinstance(item, dict) else str(item)
            metrics.append(file)
            if name == "evaluate" and eval_metrics is None:
                eval_metrics = file
    params: dict[str, Any] = {}
    for stage in locked.values():
        for values in (stage.get("params") or {}).values():
            params |= flatten(values)
    return Pins(
        adapter=adapter,
        base=base,
        data=data,
        evaluated=evaluated.md5 if evaluated else None,
        eval_metrics=eval_metrics,
        metrics_files=tuple(metrics),
        params=dict(sorted(params.items())),
    )


class Versions:
    """The versions of one git + DVC repository, read without touching its workspace."""

    def __init__(self, repo: str | Path = ".") -> None:
        start = Path(repo)
        if not start.is_dir():
            raise UserError(f"{start}: no such directory")
        result = subprocess.run(
            ["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise UserError(f"{start.resolve()} is not inside a git repository: run this in the project's clone")
        self.root = Path(result.stdout.strip())
        if not (self.root / ".dvc").is_dir():
            raise UserError(f"{self.root} is not a DVC repository (no .dvc/): run `dvc init` or use the project clone")
        self.store = Path(os.environ.get(STORE_ENV) or self.root / ".dvc" / "tmp" / "loravc")
        self._blobs: dict[str, bytes | None] = {}
        self._fetch_failed: str | None = None
        self._pins: dict[str, Pins | None] = {}

    def close(self) -> None:
        if "dvc" in self.__dict__:
            self.__dict__.pop("dvc").close()

    def __enter__(self) -> "Versions":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- git -----------------------------------------------------------------------------------
    def git(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise UserError(f"git {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def read_blobs(self, specs: list[str]) -> dict[str, bytes | None]:
        """Contents of `<commit>:<path>` specs in one `git cat-file --batch` call (None: not there)."""
        todo = [s for s in dict.fromkeys(specs) if s not in self._blobs and "\n" not in s]
        if todo:
            out = subprocess.run(
                ["git", "-C", str(self.root), "cat-file", "--batch"],
                input="\n".join(todo).encode() + b"\n",
                capture_output=True,
                check=True,
            ).stdout
            pos = 0
            for spec in todo:
                end = out.index(b"\n", pos)
                header = out[pos:end].split()
                pos = end + 1
                if len(header) == 3 and header[1] == b"blob":
                    size = int(header[2])
                    self._blobs[spec] = out[pos : pos + size]
                    pos += size + 1
                elif len(header) == 3:  # a tree or another object: skip its body
                    pos += int(header[2]) + 1
                    self._blobs[spec] = None
                else:  # "<spec> missing" / "ambiguous"
                    self._blobs[spec] = None
        return {s: self._blobs.get(s) for s in specs}

    @cached_property
    def refs(self) -> list[Ref]:
        """Branches, plain tags, experiment refs and (through GTO) registry versions and stages."""
        refs, registry_tags = [], False
        fields = "--format=%(objectname)%09%(*objectname)%09%(refname)"
        for line in self.git("for-each-ref", fields, "refs/heads", "refs/tags", "refs/exps").splitlines():
            obj, peeled, name = line.split("\t")
            commit = peeled or obj
            if name.startswith("refs/heads/"):
                refs.append(Ref("branch", name.removeprefix("refs/heads/"), commit))
            elif name.startswith("refs/tags/"):
                tag = name.removeprefix("refs/tags/")
                if "@" in tag or "#" in tag:
                    registry_tags = True
                else:
                    refs.append(Ref("tag", tag, commit))
            elif EXP_REF_RE.fullmatch(name):
                refs.append(Ref("experiment", name.rsplit("/", 1)[1], commit))
        if registry_tags:
            refs += self.registry_refs()
        return refs

    def registry_refs(self) -> list[Ref]:
        """GTO's view: `name@vX.Y.Z` for registered versions, `name#stage` for the current stages."""
        from gto.registry import GitRegistry

        refs = []
        with GitRegistry.from_url(str(self.root)) as registry:
            for name, artifact in registry.get_artifacts().items():
                for version in artifact.get_versions(include_non_explicit=False, include_discovered=False):
                    refs.append(Ref("registry", f"{name}@{version.version}", version.commit_hexsha))
                for stage, vstages in artifact.get_vstages().items():
                    refs += [Ref("stage", f"{name}#{stage}", v.commit_hexsha) for v in vstages[:1]]
        return refs

    def head(self) -> str | None:
        return self.git("rev-parse", "--verify", "-q", "HEAD", check=False).strip() or None

    def pins(self, commit: str) -> Pins | None:
        if commit not in self._pins:
            dvc_yaml, dvc_lock = self.read_blobs([f"{commit}:dvc.yaml", f"{commit}:dvc.lock"]).values()
            try:
                self._pins[commit] = parse_pins(parse_yaml(dvc_yaml), parse_yaml(dvc_lock))
            except Exception:  # a broken dvc.yaml/lock in old history holds no readable version
                self._pins[commit] = None
        return self._pins[commit]

    # --- all versions ----------------------------------------------------------------------------
    @cached_property
    def introduced(self) -> dict[str, Version]:
        """{adapter hash: Version at the commit that introduced it, with every ref that holds it}; no reads."""
        tips = list(dict.fromkeys([r.commit for r in self.refs] + [h for h in [self.head()] if h]))
        if not tips:
            return {}
        history = self.git("log", "--full-history", "--topo-order", "--reverse", "--format=%H", *tips, "--", "dvc.lock")
        commits = list(dict.fromkeys(history.split() + tips))
        self.read_blobs([f"{c}:{name}" for c in commits for name in ("dvc.yaml", "dvc.lock")])
        by_adapter: dict[str, Version] = {}
        for commit in commits:
            pins = self.pins(commit)
            if pins is not None and pins.adapter.md5 not in by_adapter:
                by_adapter[pins.adapter.md5] = Version(commit, pins)
        for ref in self.refs:
            pins = self.pins(ref.commit)
            if pins is not None and pins.adapter.md5 in by_adapter:
                by_adapter[pins.adapter.md5].refs.append(ref)
        return by_adapter

    @cached_property
    def all(self) -> list[Version]:
        """One entry per distinct adapter, at the commit that introduced it, newest first, metadata read."""
        versions = list(self.introduced.values())
        missing = [(v, v.pins.adapter) for v in versions if self._cache_path(v.pins.adapter, METADATA_FILE) is None]
        if missing:  # one `dvc fetch` for all of them; what still lacks is reported per version below
            self.fetch(missing)
        for version in versions:
            self._read(version)
        return sorted(versions, key=lambda v: (v.metadata or {}).get("created") or "", reverse=True)

    def _read(self, version: Version) -> None:
        """Fill in metadata and metrics; a problem becomes version.error, not an exception."""
        specs = [f"{version.rev}:{f}" for f in version.pins.metrics_files]
        for spec, blob in self.read_blobs(specs).items():
            if blob is not None:
                try:
                    values = flatten(json.loads(blob))
                except ValueError:
                    continue  # a damaged metrics file leaves its metrics out
                file = spec.split(":", 1)[1]
                version.metrics |= {f"{file}:{key}": value for key, value in values.items()}
        try:
            version.metadata = self.read_metadata(version)
        except UserError as err:
            version.error = str(err)

    # --- reading files of a version from DVC's cache ---------------------------------------------
    @cached_property
    def dvc(self) -> Any:
        from dvc.repo import Repo

        return Repo(str(self.root))

    def _tree(self, out: Out) -> Any:
        """The directory manifest of `out` from the local cache, or None if the cache lacks it."""
        from dvc_data.hashfile.hash_info import HashInfo
        from dvc_data.hashfile.tree import Tree

        try:
            return Tree.load(self.dvc.cache.local, HashInfo("md5", out.md5))
        except Exception:  # missing or corrupt manifest: fetch it again
            return None

    def _cache_path(self, out: Out, relpath: str) -> Path | None:
        tree = self._tree(out)
        entry = tree.get(tuple(relpath.split("/"))) if tree is not None else None
        if entry is None or entry[1] is None:
            return None
        path = Path(self.dvc.cache.local.oid_to_path(entry[1].value))
        return path if path.is_file() else None

    def read_file(self, version: Version, out: Out, relpath: str) -> tuple[bytes, Path]:
        """A file of a tracked directory at the version's revision: from the cache, fetched if missing."""
        cached = self._cache_path(out, relpath)
        if cached is None:
            problem = self.fetch([(version, out)]) or "the DVC remote does not have it either"
            cached = self._cache_path(out, relpath)
            if cached is None:
                raise UserError(
                    f"{out.path}/{relpath} at {version.short} is not in the DVC cache and {problem}: {PULL}"
                )
        return cached.read_bytes(), cached

    def read_metadata(self, version: Version) -> dict[str, Any]:
        out = version.pins.adapter
        raw, cached = self.read_file(version, out, METADATA_FILE)
        where = f"{out.path}/{METADATA_FILE} at {version.short}"
        try:
            metadata = json.loads(raw)
            if not isinstance(metadata, dict) or "version_id" not in metadata:
                raise ValueError("no version_id")
            return metadata
        except ValueError as err:
            reason = f"{err.msg} at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else str(err)
        tree = self._tree(out)
        entry = tree.get((METADATA_FILE,)) if tree is not None else None
        if cached is not None and entry and hashlib.md5(raw).hexdigest() != entry[1].value:
            raise UserError(
                f"{where} is damaged ({reason}): its copy in the DVC cache, {cached}, no longer matches its hash. "
                "Delete that file, then `dvc pull` restores it (and `dvc checkout` the workspace copy)"
            )
        raise UserError(f"{where} is damaged ({reason}): it was committed that way; retrain with `dvc repro`")

    # --- resolving a reference -------------------------------------------------------------------
    def resolve(self, ref: str) -> Version:
        """The version a reference names: version id, registry ref, branch, tag, experiment, revision."""
        check_ref(ref)
        if VERSION_ID_RE.fullmatch(ref):
            found = [v for v in self.all if v.version_id == ref]
            if found:
                return found[0]
            self.not_found(ref)
        commit = None
        if REGISTRY_RE.fullmatch(ref):
            commit = self._registry_commit(ref)
        if commit is None:
            named = [r for r in self.refs if r.name == ref and r.kind in ("branch", "tag")]
            named = named or [r for r in self.refs if r.name == ref and r.kind == "experiment"]
            if len({r.commit for r in named}) > 1:
                raise UserError(
                    f"{ref!r} names {len(named)} experiments (from different baselines): use one of the revisions "
                    + ", ".join(r.commit[:7] for r in named)
                )
            commit = named[0].commit if named else None
        if commit is None:
            commit = self.git("rev-parse", "--verify", "-q", "--end-of-options", f"{ref}^{{commit}}", check=False)
            commit = commit.strip() or None
        if commit is None:
            self.not_found(ref)
        return self.at(commit, ref)

    def _registry_commit(self, ref: str) -> str | None:
        for r in self.refs:
            if r.kind in ("registry", "stage") and r.name == ref:
                return r.commit
        if ref.endswith(("@latest", "@greatest")):
            from gto.api import find_latest_version
            from gto.exceptions import GTOException

            try:
                latest = find_latest_version(str(self.root), ref.rsplit("@", 1)[0])
            except GTOException:  # no such artifact: reported as an unknown REF
                return None
            return latest.commit_hexsha if latest else None
        return None

    def at(self, commit: str, ref: str | None = None) -> Version:
        pins = self.pins(commit)
        if pins is None:
            raise UserError(
                f"{ref or commit} ({commit[:7]}) holds no trained adapter: its dvc.lock has no output of stage "
                f"`train` (commit dvc.lock after `dvc repro`); {LIST_HINT}"
            )
        known = self.introduced.get(pins.adapter.md5)
        version = Version(commit, pins, refs=list(known.refs) if known else [])
        self._read(version)
        if version.error:
            raise UserError(version.error)
        return version

    def not_found(self, ref: str) -> None:
        names = {r.name for r in self.refs} | {v.version_id for v in self.all if v.version_id}
        names |= {v.short for v in self.all}
        close = difflib.get_close_matches(ref, sorted(names), n=5, cutoff=0.5)
        hint = f"; nearest: {', '.join(close)}" if close else ""
        raise UserError(f"no version {ref!r} in {self.root}{hint}; {LIST_HINT}")

    # --- directories a version needs, assembled from the cache -----------------------------------
    def fetch(self, wanted: list[tuple[Version, Out]]) -> str | None:
        """Fetch directories of versions from the DVC remote into the cache (`dvc fetch`, never a checkout).

        Uses the remote configured now, not whatever an old commit's .dvc/config named. Returns why
        it could not fetch, or None. A failure is remembered: later reads report it without retrying.
        """
        if self._fetch_failed:
            return self._fetch_failed
        config = self.dvc.config
        remote = config["core"].get("remote")
        if not remote:
            self._fetch_failed = "no default DVC remote is configured to fetch it from"
            return self._fetch_failed
        overrides = {"core": {"remote": remote}, "remote": {name: dict(c) for name, c in config["remote"].items()}}
        try:
            self.dvc.fetch(
                targets=sorted({out.path for _, out in wanted}),
                revs=sorted({v.rev for v, _ in wanted}),
                workspace=False,
                config=overrides,
            )
        except Exception as err:  # DVC raises many kinds; all mean "not fetched"
            self._fetch_failed = f"fetching it from DVC remote {remote!r} failed ({err})"
            return self._fetch_failed
        return None

    def _complete_tree(self, version: Version, out: Out) -> Any:
        odb = self.dvc.cache.local
        tree = self._tree(out)
        if tree is None or any(not odb.exists(hi.value) for _, _, hi in tree):
            problem = self.fetch([(version, out)]) or "the DVC remote does not have all of it either"
            tree = self._tree(out)
            if tree is None or any(not odb.exists(hi.value) for _, _, hi in tree):
                raise UserError(f"{out.path} at {version.short} is not complete in the DVC cache and {problem}: {PULL}")
        return tree

    def materialize(self, version: Version, out: Out, dest: Path | None = None) -> Path:
        """`out` of `version` as a local directory (hard links into the cache, reused), or a copy at `dest`."""
        target = dest or self.store / out.md5.removesuffix(".dir")
        if dest is None and target.is_dir():
            return target
        if dest is not None and dest.exists():
            raise UserError(f"{dest} already exists: choose another directory (nothing was overwritten)")
        tree = self._complete_tree(version, out)
        scratch = _scratch_dir(target)
        try:
            for key, _, hash_info in tree:
                source, file = Path(self.dvc.cache.local.oid_to_path(hash_info.value)), scratch.joinpath(*key)
                file.parent.mkdir(parents=True, exist_ok=True)
                if dest is None:
                    try:
                        os.link(source, file)
                        continue
                    except OSError:
                        pass  # another file system: copy
                shutil.copyfile(source, file)
            scratch.rename(target)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            if dest is None and target.is_dir():  # another process assembled it first
                return target
            raise
        return target

    def directories(self, version: Version) -> tuple[Path, Path]:
        """(base directory, adapter directory) of a version, assembled from the cache."""
        if version.pins.base is None:
            raise UserError(
                f"{version.short}: dvc.lock names no base model for stage `train` (its --base dependency); "
                "this version cannot be loaded"
            )
        return self.materialize(version, version.pins.base), self.materialize(version, version.pins.adapter)


def _scratch_dir(target: Path) -> Path:
    """An empty sibling of `target` to fill and then rename (never a half-written target), umask honoured."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as err:
        raise UserError(f"cannot write {target}: {err.strerror} ({target.parent}); choose another directory") from None
    umask = os.umask(0)
    os.umask(umask)
    scratch.chmod(0o777 & ~umask)
    return scratch


# --- facts read from the adapter weights themselves -------------------------------------------------
def lora_facts(adapter_dir: Path) -> dict[str, Any]:
    """Rank per module from the tensor shapes, target modules, alpha and the trainable parameter count.

    lora_A weights are (r, in_features) and lora_B (out_features, r); the adapter file holds exactly
    the trainable tensors, so their sizes add up to the trainable parameter count.
    """
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    with safe_open(str(weights), framework="numpy") as f:
        slices = {key: f.get_slice(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    shapes = {key: list(s.get_shape()) for key, s in slices.items()}
    dtypes = sorted({s.get_dtype() for s in slices.values()})
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    ranks = {key.split(".lora_A")[0]: shape[0] for key, shape in sorted(shapes.items()) if ".lora_A" in key}
    by_target: dict[str, set[int]] = {}
    for module, rank in ranks.items():
        by_target.setdefault(module.rsplit(".", 1)[-1], set()).add(rank)
    alpha = config.get("lora_alpha")
    distinct = sorted(set(ranks.values()))
    return {
        "ranks": sorted(distinct),
        "rank_per_target": {t: sorted(r) for t, r in sorted(by_target.items())},
        "rank_per_module": ranks,
        "modules": len(ranks),
        "target_modules": sorted(by_target),
        "alpha": alpha,
        "alpha_pattern": config.get("alpha_pattern") or {},
        "scaling": [round(alpha / (r**0.5 if config.get("use_rslora") else r), 6) for r in distinct] if alpha else [],
        "trainable_parameters": sum(_numel(s) for s in shapes.values()),
        "dtypes": dtypes,  # safetensors names: F32, BF16
        "adapter_bytes": weights.stat().st_size,
    }


def _numel(shape: list[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def describe(versions: Versions, version: Version) -> dict[str, Any]:
    """Everything `show` prints: refs, metadata, metrics, params, LoRA facts from the weights."""
    adapter = versions.materialize(version, version.pins.adapter)
    return version.row() | {
        "metadata": version.metadata,
        "metrics": version.metrics,
        "params": version.pins.params,
        "lora_weights": lora_facts(adapter),
        "base": {"path": version.pins.base.path, "md5": version.pins.base.md5} if version.pins.base else None,
    }


def compare(versions: Versions, a: Version, b: Version) -> dict[str, Any]:
    """Params and metrics that differ, and the LoRA facts of both, read from the weights."""
    da, db = describe(versions, a), describe(versions, b)

    def diff(x: dict[str, Any], y: dict[str, Any]) -> dict[str, list[Any]]:
        return {k: [x.get(k), y.get(k)] for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)}

    return {
        "a": da,
        "b": db,
        "params": diff(a.pins.params, b.pins.params),
        "metrics": diff(a.metrics, b.metrics),
    }


# --- using a version ----------------------------------------------------------------------------------
def load(versions: Versions, version: Version, device: str = "cpu") -> tuple[Any, Any]:
    """(PeftModel, tokenizer) of a version on one device; a missing device is a clear error up front."""
    from loravc.devices import resolve_device
    from loravc.evaluation import load_base_and_adapter

    resolved = resolve_device(device, "device")
    base_dir, adapter_dir = versions.directories(version)
    return load_base_and_adapter(base_dir, adapter_dir, resolved)


def load_version(ref: str, device: str = "cpu", repo: str | Path = ".") -> tuple[Any, Any]:
    """(model, tokenizer) of the version `ref` names, adapter applied, model on `device`.

    `ref` is a git revision, branch, tag, experiment name, version id (`v_...`) or registry
    reference (`lora-adapter@v1.2.0`, `lora-adapter#prod`). Reads from DVC's cache (fetching
    from the remote if needed) and never touches the workspace. `model.disable_adapter()` is a
    context manager that gives the base model back.
    """
    check_ref(ref)
    with Versions(repo) as versions:
        return load(versions, versions.resolve(ref), device)


def export(versions: Versions, version: Version, dest: Path | None = None) -> Path:
    """Copy a version's adapter directory (with its metadata.json) to its own directory."""
    target = dest or versions.root / EXPORT_DIR / str(version.version_id)
    versions.materialize(version, version.pins.adapter, dest=target)
    source = {
        "rev": version.rev,
        "refs": [r.name for r in version.refs],
        "adapter": {"path": version.pins.adapter.path, "md5": version.pins.adapter.md5},
        "base": {"path": version.pins.base.path, "md5": version.pins.base.md5} if version.pins.base else None,
        "exported": utc_now().isoformat(),
    }
    (target / "version.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return target


PROBE_TEXT = "The assert statement is a convenient way to insert debugging assertions into a program."


def merge(versions: Versions, version: Version, dest: Path, device: str = "cpu") -> dict[str, Any]:
    """Merge the adapter into the base and save it (safetensors, tokenizer, metadata.json).

    Before saving, the merged model's logits on a probe sentence must match base + adapter within
    MERGE_TOLERANCE; the measured difference goes into the metadata.
    """
    import torch

    from loravc.base_model import save_tokenizer

    if dest.exists():
        raise UserError(f"{dest} already exists: choose another directory (nothing was overwritten)")
    model, tokenizer = load(versions, version, device)
    inputs = tokenizer(PROBE_TEXT, return_tensors="pt").to(next(model.parameters()).device)
    with torch.no_grad():
        expected = model(**inputs).logits
        merged = model.merge_and_unload()
        got = merged(**inputs).logits
    difference = float((expected - got).abs().max())
    if not difference <= MERGE_TOLERANCE:
        raise UserError(f"merged logits differ from base + adapter by {difference:.3g} > {MERGE_TOLERANCE}: not saved")
    scratch = _scratch_dir(dest)
    try:
        merged.save_pretrained(scratch, safe_serialization=True)
        save_tokenizer(tokenizer, scratch)
        record = {
            "merged_from": {
                "version_id": version.version_id,
                "rev": version.rev,
                "refs": [r.name for r in version.refs],
                "adapter": {"path": version.pins.adapter.path, "md5": version.pins.adapter.md5},
                "base": {"path": version.pins.base.path, "md5": version.pins.base.md5} if version.pins.base else None,
            },
            "merged": utc_now().isoformat(),
            "logits_check": {"max_abs_difference": difference, "tolerance": MERGE_TOLERANCE, "probe": PROBE_TEXT},
            "version": version.metadata,
        }
        write_metadata(scratch, record)
        scratch.rename(dest)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return record


def generate(versions: Versions, version: Version, prompt: str, max_new_tokens: int, device: str = "cpu") -> str:
    from loravc.evaluation import generate as greedy

    model, tokenizer = load(versions, version, device)
    return greedy(model, tokenizer, [prompt], max_new_tokens)[0]


def dir_md5(path: Path) -> tuple[str, dict[str, str]]:
    """DVC's hash of a directory (`<md5>.dir`, what dvc.lock records) and each file's md5."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    with tempfile.TemporaryDirectory() as tmp:
        _, _, tree = build(HashFileDB(LocalFileSystem(), tmp), str(path), LocalFileSystem(), "md5", dry_run=True)
    files = {"/".join(key): hi.value for key, _, hi in tree}
    return tree.hash_info.value, files


def verify(
    versions: Versions,
    version: Version,
    *,
    evaluate: bool = False,
    device: str = "cpu",
    tolerance: float = EVAL_TOLERANCE,
) -> dict[str, Any]:
    """Check a version: its files hash to what dvc.lock says, it loads, and optionally its perplexity.

    Files are assembled afresh from the DVC cache into a scratch directory, so the cache copy is
    what gets checked. Raises UserError on the first failed check; returns what was checked.
    """
    import torch

    report: dict[str, Any] = {"rev": version.rev, "version_id": version.version_id, "files": {}}
    outs = {"adapter": version.pins.adapter, "base": version.pins.base}
    if evaluate:
        outs["data"] = version.pins.data
    versions.store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".verify-", dir=versions.store) as tmp:
        dirs: dict[str, Path] = {}
        for name, out in outs.items():
            if out is None:
                raise UserError(f"{version.short}: dvc.lock records no {name} directory for this version")
            dirs[name] = versions.materialize(version, out, dest=Path(tmp) / name)
            found, files = dir_md5(dirs[name])
            report["files"][out.path] = {"recorded": out.md5, "found": found, "files": len(files)}
            if found != out.md5:
                recorded = {"/".join(k): hi.value for k, _, hi in versions._tree(out)}
                bad = sorted(f for f in set(files) | set(recorded) if files.get(f) != recorded.get(f))
                raise UserError(
                    f"{out.path} at {version.short} hashes to {found}, dvc.lock says {out.md5} (differs: "
                    f"{', '.join(bad) or 'the manifest'}): the DVC cache copy is damaged; remove those files from "
                    "the cache and `dvc pull`"
                )
        from loravc.devices import resolve_device
        from loravc.evaluation import load_base_and_adapter

        model, tokenizer = load_base_and_adapter(dirs["base"], dirs["adapter"], resolve_device(device, "device"))
        inputs = tokenizer(PROBE_TEXT, return_tensors="pt").to(next(model.parameters()).device)
        with torch.no_grad():
            logits = model(**inputs).logits
        if not bool(torch.isfinite(logits).all()):
            raise UserError(f"{version.short}: the loaded model produces non-finite logits")
        report["loads"] = {"device": str(next(model.parameters()).device), "probe_tokens": int(logits.shape[1])}
        if evaluate:
            report["eval"] = _reevaluate(version, model, tokenizer, dirs["data"], tolerance)
    return report


def _reevaluate(version: Version, model: Any, tokenizer: Any, data_dir: Path, tolerance: float) -> dict[str, Any]:
    from loravc import data
    from loravc.evaluation import perplexity

    recorded = version.test_perplexity
    if recorded is None:
        raise UserError(
            f"{version.short}: no recorded test perplexity for this adapter (the evaluate stage's metrics at that "
            "revision are missing or belong to another adapter): run `dvc repro evaluate` and commit"
        )
    params = version.pins.params
    result = perplexity(
        model,
        tokenizer,
        data.read_split(data_dir, "test"),
        max_length=int(params.get("train.max_length", TrainParams.max_length)),
        batch_size=int(params.get("evaluate.batch_size", EvaluateParams.batch_size)),
    )
    relative = abs(result["perplexity"] - recorded) / recorded
    check = {"recorded": recorded, "measured": result["perplexity"], "relative_difference": relative}
    check["tolerance"] = tolerance
    if relative > tolerance:
        raise UserError(
            f"{version.short}: test perplexity {result['perplexity']} differs from the recorded {recorded} by "
            f"{relative:.2%} (tolerance {tolerance:.2%})"
        )
    return check
