"""Directories a version pins, read from DVC's cache (fetched from the DVC remote when missing).

Nothing here checks anything out: files are read from the cache, and whole directories are
assembled under `.dvc/tmp/loravc/<md5>/` (hard links where possible), reused by later calls.
"""

import hashlib
import os
import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.versions.pins import Out

STORE_ENV = "LORAVC_STORE"  # where materialized directories go (default: .dvc/tmp/loravc)
PULL = "run `dvc pull` (`dvc fetch --all-commits` for older versions) with the remote that holds it"
RESTORE = (
    "delete that cache file, then `dvc pull` restores it (`dvc fetch --all-commits` for an older version), "
    "and `dvc checkout --relink` the workspace copy"
)


class NotInCache(UserError):
    """A file a version needs is in neither the local DVC cache nor the remote; `problem` says why not fetched."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


def file_md5(path: Path) -> str:
    """The md5 DVC records for a file (DVC 3: of its bytes)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def damaged(what: str, cached: Path, found: str, recorded: str) -> str:
    """The message for a cache file whose bytes no longer hash to what DVC recorded."""
    return (
        f"{what} is damaged: its copy in the DVC cache, {cached}, hashes to {found}, not the recorded {recorded}; "
        + RESTORE
    )


class DvcCache:
    """The DVC cache of the repository at `root`, and its default remote."""

    def __init__(self, root: Path) -> None:
        if not (root / ".dvc").is_dir():
            raise UserError(f"{root} is not a DVC repository (no .dvc/): run `dvc init` or use the project clone")
        self.root = root
        self.store = Path(os.environ.get(STORE_ENV) or root / ".dvc" / "tmp" / "loravc")
        self._fetch_failed: str | None = None
        self._trees: dict[str, Any] = {}  # manifests read and checked, by directory hash

    @cached_property
    def dvc(self) -> Any:
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        try:
            return Repo(str(self.root))
        except DvcException as err:  # a damaged .dvc/config, say
            raise UserError(f"cannot open the DVC repository at {self.root}: {err}") from None

    def close(self) -> None:
        if "dvc" in self.__dict__:
            self.__dict__.pop("dvc").close()

    def cache_path(self, md5: str) -> Path:
        """Where the local DVC cache keeps the object with this hash (a file, or a `.dir` manifest)."""
        return Path(self.dvc.cache.local.oid_to_path(md5))

    def tree(self, out: Out) -> Any:
        """The directory manifest of `out` from the local cache, or None if the cache lacks it.

        The manifest's bytes must hash to the `<md5>.dir` that dvc.lock records: a damaged one is a UserError.
        """
        from dvc_data.hashfile.hash_info import HashInfo
        from dvc_data.hashfile.tree import Tree

        if out.md5 in self._trees:
            return self._trees[out.md5]
        path = self.cache_path(out.md5)
        try:
            found = file_md5(path)
        except OSError:
            return None  # not in the cache: fetch it
        if found != out.md5.removesuffix(".dir"):
            what = f"the manifest of {out.path} ({out.md5})"
            raise UserError(damaged(what, path, f"{found}.dir", out.md5))
        try:
            tree = Tree.load(self.dvc.cache.local, HashInfo("md5", out.md5))
        except Exception as err:  # hashes right but DVC cannot read it: not a manifest DVC wrote
            raise UserError(f"the manifest of {out.path} in the DVC cache, {path}, is unreadable ({err})") from None
        self._trees[out.md5] = tree
        return tree

    def recorded_md5(self, out: Out) -> dict[str, str]:
        """{relative path: md5} of every file of `out`, as its manifest records them ({} if missing)."""
        tree = self.tree(out)
        return {"/".join(key): hi.value for key, _, hi in tree} if tree is not None else {}

    def path_of(self, out: Out, relpath: str) -> Path | None:
        """The cache file holding `relpath` of `out`, or None if the cache lacks it."""
        md5 = self.recorded_md5(out).get(relpath)
        path = self.cache_path(md5) if md5 else None
        return path if path is not None and path.is_file() else None

    def read_file(self, rev: str, out: Out, relpath: str) -> tuple[bytes, Path]:
        """A file of `out` as pinned at `rev`: from the cache, fetched from the remote if missing.

        Its bytes must hash to what the manifest records: a damaged copy is a UserError naming the cache file.
        """
        cached = self.path_of(out, relpath)
        if cached is None:
            problem = self.fetch([(rev, out)]) or "the DVC remote does not have it"
            cached = self.path_of(out, relpath)
            if cached is None:
                raise NotInCache(
                    f"{out.path}/{relpath} at {rev[:7]} is not in the DVC cache and {problem}: {PULL}", problem
                )
        raw = cached.read_bytes()
        recorded, found = self.recorded_md5(out)[relpath], hashlib.md5(raw).hexdigest()
        if found != recorded:
            raise UserError(damaged(f"{out.path}/{relpath} at {rev[:7]}", cached, found, recorded))
        return raw, cached

    def fetch(self, wanted: list[tuple[str, Out]]) -> str | None:
        """Fetch (revision, directory) pairs from the DVC remote into the cache (`dvc fetch`, never a checkout).

        Uses the remote configured now, not whatever an old commit's .dvc/config named. Returns why
        it could not fetch, or None. A failure is remembered: later reads report it without retrying.
        """
        if self._fetch_failed:
            return self._fetch_failed
        config = self.dvc.config
        remote = config["core"].get("remote")
        if not remote:
            self._fetch_failed = "no default DVC remote is configured"
            return self._fetch_failed
        overrides = {"core": {"remote": remote}, "remote": {name: dict(c) for name, c in config["remote"].items()}}
        try:
            self.dvc.fetch(
                targets=sorted({out.path for _, out in wanted}),
                revs=sorted({rev for rev, _ in wanted}),
                workspace=False,
                config=overrides,
            )
        except Exception as err:  # DVC raises many kinds; all mean "not fetched"
            self._fetch_failed = f"fetching from DVC remote {remote!r} failed ({err})"
            return self._fetch_failed
        return None

    def _complete_tree(self, rev: str, out: Out) -> Any:
        odb = self.dvc.cache.local

        def complete() -> Any:
            tree = self.tree(out)
            return tree if tree is not None and all(odb.exists(hi.value) for _, _, hi in tree) else None

        tree = complete()
        if tree is None:
            problem = self.fetch([(rev, out)]) or "the DVC remote does not have all of it either"
            tree = complete()
            if tree is None:
                raise UserError(f"{out.path} at {rev[:7]} is not complete in the DVC cache and {problem}: {PULL}")
        return tree

    def materialize(self, rev: str, out: Out, dest: Path | None = None) -> Path:
        """`out` as pinned at `rev` as a local directory (hard links into the cache, reused), or a copy at `dest`.

        Every file is checked against the hash its manifest records before the directory is returned.
        """
        target = dest or self.store / out.md5.removesuffix(".dir")
        if dest is None and target.is_dir():
            self.check(rev, out, target)  # reused: its files are hard links that a write may have changed
            return target
        if dest is not None and dest.exists():
            raise UserError(f"{dest} already exists: choose another directory (nothing was overwritten)")
        tree = self._complete_tree(rev, out)
        scratch = scratch_dir(target)
        try:
            for key, _, hash_info in tree:
                source, file = self.cache_path(hash_info.value), scratch.joinpath(*key)
                file.parent.mkdir(parents=True, exist_ok=True)
                if dest is None:
                    try:
                        os.link(source, file)
                        continue
                    except OSError:
                        pass  # another file system: copy
                shutil.copyfile(source, file)
            self.check(rev, out, scratch)  # every file hashes to what the manifest records
            scratch.rename(target)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            if dest is None and target.is_dir():  # another process assembled it first
                return target
            raise
        except UserError:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return target

    def check(self, rev: str, out: Out, directory: Path) -> None:
        """Every file of an assembled `out` hashes to what its manifest records (the weights before a load)."""
        for relpath, md5 in self.recorded_md5(out).items():
            found = file_md5(directory / relpath)
            if found != md5:
                raise UserError(damaged(f"{out.path}/{relpath} at {rev[:7]}", self.cache_path(md5), found, md5))


def scratch_dir(target: Path) -> Path:
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
