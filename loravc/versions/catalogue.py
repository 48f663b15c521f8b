"""Every model version of this repository: find them all, resolve a reference to one, read its metadata.

A version is the adapter directory (the `artifacts:` path in dvc.yaml, `models/adapter`) as a
commit's dvc.lock pins it, on a branch, a tag or a DVC experiment ref. Everything is read at that
revision from git (dvc.yaml, dvc.lock, metrics files) and from DVC's cache, fetching from the DVC
remote when the cache lacks it; nothing is checked out and the workspace is never touched.
What a version can then do lives beside this module (loravc.versions.inspection: LoRA facts, compare;
loravc.versions.verify) and in loravc.export (load, generate, the export formats, merge).

Nothing here imports torch, so listing and showing versions is quick.
"""

import difflib
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from loravc.core import recipe
from loravc.core.errors import UserError
from loravc.core.metadata import METADATA_FILE, VERSION_ID_RE, VersionMetadata, describe_problem
from loravc.core.schema import flatten
from loravc.versions import pins as pins_module
from loravc.versions.cache import DvcCache, NotInCache
from loravc.versions.gitrepo import GitRepo
from loravc.versions.pins import Out, Pins, load_yaml12, parse_pins, pins_from_dict, pins_to_dict
from loravc.versions.refs import LIST_HINT, REGISTRY_RE, Ref, check_ref

INDEX_FILE = "pins-index.json"  # in the cache's scratch store: parsed pins by (dvc.yaml, dvc.lock) blob ids


@dataclass
class Version:
    """One version: its pins at a commit, the names pointing at it, and what was read about it."""

    rev: str  # the commit this version is read at
    pins: Pins
    refs: list[Ref] = field(default_factory=list)
    metadata: VersionMetadata | None = None
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # flattened, "<file>:<key>"
    missing: str | None = None  # why its metadata.json is in no cache or remote (then `error` says the rest)

    @property
    def short(self) -> str:
        return self.rev[:7]

    @property
    def label(self) -> str:
        """`abc1234 (main, lora-adapter#prod)`: the revision and the names that point at it."""
        names = [r.name for r in self.refs]
        return self.short + (f" ({', '.join(names)})" if names else "")

    def names(self, *kinds: str) -> list[str]:
        return [r.name for r in self.refs if r.kind in kinds]

    @property
    def version_id(self) -> str | None:
        return self.metadata.version_id if self.metadata else None

    @property
    def evaluated(self) -> bool:
        """Whether the evaluate stage at this revision ran on exactly this adapter (its figures are this one's)."""
        return self.pins.evaluated == self.pins.adapter.md5

    @property
    def test_perplexity(self) -> float | None:
        """The evaluate stage's fine-tuned perplexity, if it ran on exactly this adapter."""
        if self.pins.eval_metrics is None or not self.evaluated:
            return None
        return self.metrics.get(f"{self.pins.eval_metrics}:tuned_perplexity")

    def provenance(self) -> dict[str, Any]:
        """Where this version came from: what exports and merges record next to the files."""
        return {
            "version_id": self.version_id,
            "rev": self.rev,
            "refs": [r.name for r in self.refs],
            "adapter": self.pins.adapter.as_dict(),
            "base": self.pins.base.as_dict() if self.pins.base else None,
        }

    def data(self) -> dict[str, Any]:
        """What the version trained on: source, shape, fixed test file, record counts, sha256 of the splits."""
        record = self.metadata.data if self.metadata else None
        fields = ("source", "shape", "fixed_test", "train_records", "validation_records", "sha256")
        return {name: getattr(record, name) for name in fields} if record else {}

    def row(self) -> dict[str, Any]:
        meta = self.metadata
        return {
            "rev": self.rev,
            "branches": self.names("branch"),
            "tags": self.names("tag"),
            "experiments": self.names("experiment"),
            "registry": self.names("registry", "stage"),
            "version_id": self.version_id,
            "created": meta.created if meta else None,
            "base_model": meta.base_model.get("id") if meta else None,
            "lora_r": meta.lora.r if meta else None,
            "recipe": recipe.record(meta) if meta else None,
            "data": self.data() if meta else None,
            "validation_loss": meta.metrics.validation_loss if meta else None,
            "test_perplexity": self.test_perplexity,
            "adapter": self.pins.adapter.as_dict(),
            "error": self.error,
            "missing": self.missing,
        }


class Versions:
    """The versions of one git + DVC repository, read without touching its workspace."""

    def __init__(self, repo: str | Path = ".") -> None:
        self.repo = GitRepo(repo)
        self.root = self.repo.root
        self.cache = DvcCache(self.root)
        self._pins: dict[str, Pins | None] = {}

    def close(self) -> None:
        self.cache.close()

    def __enter__(self) -> "Versions":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def refs(self) -> list[Ref]:
        return self.repo.refs

    def pins(self, commit: str) -> Pins | None:
        if commit not in self._pins:
            self.read_pins([commit])
        return self._pins[commit]

    def read_pins(self, commits: list[str]) -> None:
        """Pins of many commits: from the index by their dvc.yaml and dvc.lock blob ids (files never change
        under an id), else parsed (libyaml, as DVC reads YAML) and added to it."""
        todo = [c for c in dict.fromkeys(commits) if c not in self._pins]
        if not todo:
            return
        ids = self.repo.blob_ids([f"{c}:{name}" for c in todo for name in ("dvc.yaml", "dvc.lock")])
        index, new = self._index, {}
        keys = {c: f"{ids[f'{c}:dvc.yaml']}:{ids[f'{c}:dvc.lock']}" for c in todo}
        misses = [c for c in todo if keys[c] not in index]
        self.repo.read_blobs([f"{c}:{name}" for c in misses for name in ("dvc.yaml", "dvc.lock")])  # one git call
        for commit in todo:
            key = keys[commit]
            try:
                self._pins[commit] = pins_from_dict(index[key])
                continue
            except (KeyError, TypeError, ValueError):  # not indexed, or an entry this code cannot read
                pass
            blobs = self.repo.read_blobs([f"{commit}:dvc.yaml", f"{commit}:dvc.lock"]).values()  # read above
            try:
                self._pins[commit] = parse_pins(*(None if b is None else load_yaml12(b) for b in blobs))
            except Exception:  # a broken dvc.yaml/lock in old history holds no readable version
                self._pins[commit] = None
            if (entry := _indexable(self._pins[commit])) is not False:
                new[key] = entry
        if new:
            index |= new
            self._save_index(index)

    @cached_property
    def _index(self) -> dict[str, Any]:
        """The index of parsed pins, if it was written by this code's parser (else an empty one)."""
        try:
            saved = json.loads((self.cache.store / INDEX_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        pins = saved.get("pins") if isinstance(saved, dict) and saved.get("parser") == _parser_id() else None
        return pins if isinstance(pins, dict) else {}

    def _save_index(self, index: dict[str, Any]) -> None:
        """Write the index whole (a rename: readers never see half of it); a read-only store just stays cold."""
        path = self.cache.store / INDEX_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_name(f".{INDEX_FILE}.{os.getpid()}")
            scratch.write_text(json.dumps({"parser": _parser_id(), "pins": index}), encoding="utf-8")
            scratch.replace(path)
        except OSError:
            pass

    # --- all versions ----------------------------------------------------------------------------
    @cached_property
    def introduced(self) -> dict[str, Version]:
        """{adapter hash: Version at the commit that introduced it, with every ref that holds it}; no reads."""
        tips = list(dict.fromkeys([r.commit for r in self.refs] + [h for h in [self.repo.head()] if h]))
        if not tips:
            return {}
        commits = list(dict.fromkeys(self.repo.commits_changing(tips, "dvc.lock") + tips))
        self.read_pins(commits)
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

        def cached(version: Version) -> bool:
            try:
                return self.cache.path_of(version.pins.adapter, METADATA_FILE) is not None
            except UserError:  # a damaged manifest: fetching does not repair it; reading it reports it
                return True

        missing = [(v.rev, v.pins.adapter) for v in versions if not cached(v)]
        if missing:  # one `dvc fetch` for all of them; what still lacks is reported per version below
            self.cache.fetch(missing)
        self.repo.read_blobs([f"{v.rev}:{f}" for v in versions for f in v.pins.metrics_files])  # one git call
        for version in versions:
            self._read(version)
        return sorted(versions, key=lambda v: v.metadata.created if v.metadata else "", reverse=True)

    def _read(self, version: Version) -> None:
        """Fill in metadata and metrics; a problem becomes version.error, not an exception."""
        specs = [f"{version.rev}:{f}" for f in version.pins.metrics_files]
        for spec, blob in self.repo.read_blobs(specs).items():
            if blob is not None:
                try:
                    values = flatten(json.loads(blob))
                except ValueError:
                    continue  # a damaged metrics file leaves its metrics out
                file = spec.split(":", 1)[1]
                version.metrics |= {f"{file}:{key}": value for key, value in values.items()}
        try:
            version.metadata = self.read_metadata(version)
        except NotInCache as err:
            version.error, version.missing = str(err), err.problem
        except UserError as err:
            version.error = str(err)

    def read_metadata(self, version: Version) -> VersionMetadata:
        """The version's metadata.json, validated.

        Every read checks the cached file against the md5 its manifest records (DvcCache.read_file), so a
        damaged or substituted copy is reported as such even when it parses; a file that hashes right but
        does not validate was committed that way.
        """
        out = version.pins.adapter
        raw, _ = self.cache.read_file(version.rev, out, METADATA_FILE)
        try:
            return VersionMetadata.from_json(raw)
        except (ValueError, UserError) as err:
            reason = describe_problem(err)
        raise UserError(
            f"{out.path}/{METADATA_FILE} at {version.short} is invalid ({reason}): it was committed that way; "
            "retrain with `dvc repro`"
        )

    def predictions(self, version: Version) -> list[dict[str, Any]] | None:
        """The evaluate stage's per-record answers and scores, if it ran on exactly this adapter and wrote them."""
        path = version.pins.predictions
        if path is None or not version.evaluated:
            return None
        blob = self.repo.read_blob(version.rev, path)
        if blob is None:
            return None
        try:
            rows = json.loads(blob)["records"]
            if not isinstance(rows, list) or not all(isinstance(r, dict) and "id" in r for r in rows):
                raise ValueError("records must be a list of objects with an id")
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{path} at {version.short} is damaged ({err}): rerun `dvc repro evaluate` there") from None
        return rows

    # --- resolving a reference -------------------------------------------------------------------
    def resolve(self, ref: str) -> Version:
        """The version a reference names: version id, registry ref, branch, tag, experiment, revision."""
        check_ref(ref)
        if VERSION_ID_RE.fullmatch(ref):
            return self.by_id(ref)
        commit = self.repo.registry_commit(ref) if REGISTRY_RE.fullmatch(ref) else None
        if commit is None:
            named = [r for r in self.refs if r.name == ref and r.kind in ("branch", "tag")]
            named = named or [r for r in self.refs if r.name == ref and r.kind == "experiment"]
            if len({r.commit for r in named}) > 1:
                raise UserError(
                    f"{ref!r} names {len(named)} experiments (from different baselines): use one of the revisions "
                    + ", ".join(r.commit[:7] for r in named)
                )
            commit = named[0].commit if named else self.repo.commit_of(ref)
        if commit is None:
            self.not_found(ref)
        return self.at(commit, ref)

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

    def by_id(self, ref: str) -> Version:
        """The one version with this id; an id without the random suffix (`v_YYYYMMDD_HHMMSS`) also names the
        one version whose id has that timestamp. Several matches are an error that lists them all."""
        found = [v for v in self.all if v.version_id and matches_id(v.version_id, ref)]
        if len(found) == 1:
            return found[0]
        if not found:
            self.not_found(ref)
        raise UserError(
            f"version id {ref!r} matches {len(found)} versions: "
            + ", ".join(f"revision {v.label} has {v.version_id}" for v in found)
            + f"; name one by its revision (`loravc show {found[0].short}`)"
        )

    def not_found(self, ref: str) -> None:
        names = {r.name for r in self.refs} | {v.version_id for v in self.all if v.version_id}
        names |= {v.short for v in self.all}
        close = difflib.get_close_matches(ref, sorted(names), n=5, cutoff=0.5)
        hint = f"; nearest: {', '.join(close)}" if close else ""
        raise UserError(f"no version {ref!r} in {self.root}{hint}; {LIST_HINT}")

    # --- directories a version needs -------------------------------------------------------------
    def materialize(self, version: Version, out: Out, dest: Path | None = None) -> Path:
        return self.cache.materialize(version.rev, out, dest)

    def directories(self, version: Version) -> tuple[Path, Path]:
        """(base directory, adapter directory) of a version, assembled from the cache, every file's hash checked."""
        if version.pins.base is None:
            raise UserError(
                f"{version.short}: dvc.lock names no base model for stage `train` (its --base dependency); "
                "this version cannot be loaded"
            )
        return self.materialize(version, version.pins.base), self.materialize(version, version.pins.adapter)


def matches_id(version_id: str, ref: str) -> bool:
    """Whether the reference `ref` (a version id) names `version_id`: the same id, or its timestamp alone."""
    return version_id == ref or version_id.startswith(ref + "_")


@functools.cache
def _parser_id() -> str:
    """What the index's entries depend on: the code that parses pins (loravc/pins.py and the flatten of
    loravc/schema.py) and the YAML library under it."""
    import yaml

    from loravc.core import schema

    digest = hashlib.sha256(f"{yaml.__version__} {yaml.__with_libyaml__}".encode())
    for module in (pins_module, schema):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def _indexable(pins: Pins | None) -> dict[str, Any] | bool | None:
    """The index entry of some pins, or False if JSON cannot hold them exactly (a date in params, say)."""
    entry = pins_to_dict(pins)
    try:
        return entry if pins_from_dict(json.loads(json.dumps(entry))) == pins else False
    except (TypeError, ValueError):
        return False
