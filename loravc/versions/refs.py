"""Version references: what a user may pass as REF, checked before it reaches git or the filesystem."""

import re
from dataclasses import dataclass

from loravc.core.errors import UserError

LIST_HINT = "run `loravc list` to see every version"
# Letters, digits and . _ / @ # + ~ ^ -; never an option, a path escape or git's rev:path / @{...} syntax.
REF_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/@#+~^-]{0,199}")
# GTO's registry references: name@vX.Y.Z (or @latest, @greatest) and name#stage
REGISTRY_RE = re.compile(r"[A-Za-z0-9][\w/-]*[A-Za-z0-9](#[\w/-]+|@(v\d+\.\d+\.\d+\S*|latest|greatest))")
# DVC's experiment refs: refs/exps/<baseline sha[:2]>/<baseline sha[2:]>/<name> (dvc.repo.experiments.refs)
EXP_REF_RE = re.compile(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/[^/]+")


def check_ref(ref: str) -> str:
    """`ref` if it is a well-formed version reference, else a UserError (nothing has run yet)."""
    if not REF_RE.fullmatch(ref) or ".." in ref or "//" in ref or "/." in ref or ref.endswith(("/", ".", ".lock")):
        raise UserError(
            f"{ref!r} is not a version reference: use a git revision, branch, tag, experiment name, "
            "version id (v_YYYYMMDD_HHMMSS_1a2b3c) or registry reference (lora-adapter@v1.2.0, lora-adapter#prod); "
            + LIST_HINT
        )
    return ref


@dataclass(frozen=True)
class Ref:
    """A name that points at a commit: a branch, tag, experiment, registry version or stage."""

    kind: str  # branch, tag, experiment, registry, stage
    name: str
    commit: str
