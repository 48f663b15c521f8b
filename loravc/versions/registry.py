"""The model registry: semantic versions and stages as git tags, in GTO's conventions.

`register` tags a version's commit `lora-adapter@v1.2.0`; `promote` moves a stage to a registered
version: `lora-adapter#prod!#N` takes it from the previous holder, `lora-adapter#prod#M` gives it
to the new one. The artifact's name and path come from the `artifacts:` block of dvc.yaml at that
commit, so `gto show lora-adapter#prod` and `dvc artifacts get . lora-adapter --rev v1.2.0`
(or `--stage prod`) work too.
"""

import re

from loravc.core.errors import UserError
from loravc.core.schema import parse_yaml
from loravc.versions.catalogue import Version, Versions
from loravc.versions.pins import model_artifacts

SEMVER_RE = re.compile(r"v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
NAME_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9/_-]*[a-zA-Z0-9])?")  # GTO's rule for artifact and stage names


def check_semver(version: str) -> str:
    if not SEMVER_RE.fullmatch(version):
        raise UserError(f"--version {version!r} must be a semantic version with a leading v, like v1.2.0")
    return version


def check_name(value: str, what: str) -> str:
    if not NAME_RE.fullmatch(value) or len(value) < 2:
        raise UserError(
            f"{what} {value!r} must be at least 2 characters of letters, digits, '_', '-' or '/', "
            "starting and ending with a letter or digit"
        )
    return value


def declared_artifacts(versions: Versions, commit: str) -> dict[str, str]:
    """{name: path} of the model artifacts dvc.yaml declares at `commit`."""
    blob = versions.repo.read_blob(commit, "dvc.yaml")
    return model_artifacts(parse_yaml(blob) if blob is not None else None)


def _gto_error(err: Exception) -> UserError:
    return UserError(f"registry: {err}")


def register(
    versions: Versions, ref: str, version: str, name: str | None = None, message: str | None = None, push: bool = False
) -> tuple[str, Version]:
    """Tag the commit of `ref` as `<name>@<version>`; returns the tag and the version it names."""
    from gto.api import register as gto_register
    from gto.exceptions import GTOException

    check_semver(version)
    target = versions.resolve(ref)
    declared = declared_artifacts(versions, target.rev)
    path = target.pins.adapter.path
    if name is None:
        name = next((n for n, p in declared.items() if p == path), None)
        if name is None:
            raise UserError(
                f"dvc.yaml at {target.short} declares no model artifact with path {path}: add one under "
                f"`artifacts:` (for example `lora-adapter: {{path: {path}, type: model}}`) and commit"
            )
    check_name(name, "artifact name")
    if declared.get(name) != path:
        raise UserError(
            f"dvc.yaml at {target.short} declares no artifact {name!r} with path {path} "
            f"(declared: {', '.join(f'{n}: {p}' for n, p in declared.items()) or 'none'})"
        )
    rank = target.metadata.lora.r if target.metadata else None
    ppl = target.test_perplexity
    message = message or (
        f"Register {name} {version}: {target.version_id}, LoRA r={rank}"
        + (f", test perplexity {ppl}" if ppl is not None else "")
    )
    try:
        gto_register(str(versions.root), name, ref=target.rev, version=version, message=message, push=push)
    except GTOException as err:
        raise _gto_error(err) from None
    return f"{name}@{version}", target


def stage_holders(versions: Versions, name: str, stage: str) -> list[str]:
    """Every registered version of `name` currently assigned `stage`, highest first (GTO's view)."""
    from gto.registry import GitRegistry

    with GitRegistry.from_url(str(versions.root)) as registry:
        artifact = registry.get_artifacts().get(name)
        if artifact is None:
            return []
        return [v.version for v in artifact.get_vstages(versions_per_stage=-1).get(stage, [])]


def promote(
    versions: Versions, name: str, version: str, stage: str, message: str | None = None, push: bool = False
) -> str | None:
    """Make the registered `<name>@<version>` the one version in `stage`; returns the new tag (None: no change).

    Any other version holding the stage is unassigned first (`name#stage!#N`), then this one is
    assigned (`name#stage#N`), so the newest stage tag names it: `gto show name#stage`, `dvc artifacts get
    --stage` and `loravc ... name#stage` all agree on it.
    """
    from gto.api import assign, unassign
    from gto.exceptions import GTOException

    check_name(name, "artifact name")
    check_semver(version)
    check_name(stage, "--stage")
    known = {r.name for r in versions.refs if r.kind == "registry"}
    if f"{name}@{version}" not in known:
        registered = sorted(n for n in known if n.startswith(f"{name}@"))
        raise UserError(
            f"{name}@{version} is not registered (registered: {', '.join(registered) or 'none'}): "
            f"run `loravc register REF --version {version}` first"
        )
    holders = stage_holders(versions, name, stage)
    if holders == [version]:
        return None
    root = str(versions.root)
    try:
        for other in (v for v in holders if v != version):
            unassign(root, name, stage=stage, version=other, message=f"{stage}: {other} -> {version}", push=push)
        event = assign(
            root,
            name,
            stage,
            version=version,
            message=message or f"Promote {name} {version} to {stage}",
            force=version in holders,  # still a holder: a new tag makes it the newest
            push=push,
        )
    except GTOException as err:
        raise _gto_error(err) from None
    return str(getattr(event, "tag", f"{name}#{stage}"))
