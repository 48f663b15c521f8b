"""Reading a git repository without touching its workspace: files at a commit, and the names of commits."""

import subprocess
from functools import cached_property
from pathlib import Path

from loravc.core.errors import UserError
from loravc.versions.refs import EXP_REF_RE, Ref


class GitRepo:
    """The git repository that holds `start`; blobs read in batches and cached."""

    def __init__(self, start: str | Path = ".") -> None:
        start = Path(start)
        if not start.is_dir():
            raise UserError(f"{start}: no such directory")
        result = subprocess.run(
            ["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise UserError(f"{start.resolve()} is not inside a git repository: run this in the project's clone")
        self.root = Path(result.stdout.strip())
        self._blobs: dict[str, bytes | None] = {}

    def git(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise UserError(f"git {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def read_blobs(self, specs: list[str]) -> dict[str, bytes | None]:
        """Contents of `<commit>:<path>` specs in one `git cat-file --batch` call (None: not there)."""
        todo = [s for s in dict.fromkeys(specs) if s not in self._blobs and "\n" not in s]
        if todo:
            out = self._cat_file("--batch", todo)
            pos = 0
            for spec in todo:
                end = out.index(b"\n", pos)
                line = out[pos:end]
                pos = end + 1
                self._blobs[spec] = None  # "<spec> missing" / "ambiguous" (the spec may hold spaces), or not a blob
                header = [] if line.endswith((b" missing", b" ambiguous")) else line.split()
                if len(header) == 3:
                    size = int(header[2])
                    if header[1] == b"blob":
                        self._blobs[spec] = out[pos : pos + size]
                    pos += size + 1
        return {s: self._blobs.get(s) for s in specs}

    def blob_ids(self, specs: list[str]) -> dict[str, str | None]:
        """The blob ids `<commit>:<path>` specs name, in one `git cat-file --batch-check` call (None: none)."""
        todo = [s for s in dict.fromkeys(specs) if "\n" not in s]
        if not todo:
            return {s: None for s in specs}
        out = self._cat_file("--batch-check=%(objectname) %(objecttype)", todo).decode()
        found = {}
        for spec, line in zip(todo, out.splitlines(), strict=True):
            parts = line.split()
            found[spec] = parts[0] if len(parts) == 2 and parts[1] == "blob" else None
        return {s: found.get(s) for s in specs}

    def _cat_file(self, option: str, specs: list[str]) -> bytes:
        """`git cat-file OPTION` over specs (one per line, none holding a newline): its whole output."""
        command = ["git", "-C", str(self.root), "cat-file", option]
        return subprocess.run(command, input="\n".join(specs).encode() + b"\n", capture_output=True, check=True).stdout

    def read_blob(self, commit: str, path: str) -> bytes | None:
        spec = f"{commit}:{path}"
        return self.read_blobs([spec])[spec]

    def head(self) -> str | None:
        return self.git("rev-parse", "--verify", "-q", "HEAD", check=False).strip() or None

    def commit_of(self, rev: str) -> str | None:
        """The commit a revision names (`rev` already checked by loravc.versions.refs.check_ref), or None."""
        found = self.git("rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{commit}}", check=False)
        return found.strip() or None

    def commits_changing(self, tips: list[str], path: str) -> list[str]:
        """Commits reachable from `tips` that change `path`, oldest first."""
        return self.git("log", "--full-history", "--topo-order", "--reverse", "--format=%H", *tips, "--", path).split()

    @cached_property
    def refs(self) -> list[Ref]:
        """Branches, plain tags, experiment refs and (through GTO) registry versions and stages."""
        refs, registry_tags = [], False
        fields = "--format=%(objectname)%09%(*objectname)%09%(refname)"
        for line in self.git("for-each-ref", fields, "refs/heads", "refs/tags").splitlines():
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
        refs += [Ref("experiment", name, commit) for name, commit in self.experiments().items()]
        if registry_tags:
            refs += self.registry_refs()
        return refs

    def experiments(self) -> dict[str, str]:
        """DVC's experiments, read now (not cached): name -> commit."""
        found = {}
        for line in self.git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").splitlines():
            commit, name = line.split(" ", 1)
            if EXP_REF_RE.fullmatch(name):
                found[name.rsplit("/", 1)[1]] = commit
        return found

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

    def registry_commit(self, ref: str) -> str | None:
        """The commit of a registry reference: a registered version, a stage, or name@latest / @greatest."""
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
