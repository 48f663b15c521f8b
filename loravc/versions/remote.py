"""Which versions live only in this machine's DVC cache: their files looked up in the default DVC remote.

A version's files are the adapter and base directories its dvc.lock pins: each `.dir` manifest and every file
the manifest lists (manifests read from the local cache; a directory whose manifest is not here counts by its
manifest alone). All of them go to the remote in one existence query, DVC's own (what `dvc status -c`
uses): a stat per object for a directory remote; for S3, a listing or a request per object, whichever DVC
estimates cheaper. Nothing is sent or fetched.
"""

from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from loravc.core.errors import UserError
from loravc.versions.catalogue import Version, Versions

PUSHED, LOCAL_ONLY = "pushed", "local only"


@dataclass
class RemoteCheck:
    """What the default DVC remote holds of each version."""

    remote: str | None  # the default remote's name; None: none is set
    configured: list[str] = field(default_factory=list)  # every remote .dvc/config names
    lacking: dict[str, int] = field(default_factory=dict)  # adapter md5 -> its objects here but not on the remote
    problem: str | None = None  # why the remote could not be asked

    def state(self, version: Version) -> str | None:
        """PUSHED, LOCAL_ONLY, or None: no remote, not asked, or a version whose files could not be read."""
        missing = self.lacking.get(version.pins.adapter.md5)
        return None if missing is None else LOCAL_ONLY if missing else PUSHED

    def as_dict(self) -> dict[str, Any]:
        return {"remote": self.remote, "configured": self.configured, "problem": self.problem}


def check_remote(versions: Versions, found: list[Version]) -> RemoteCheck:
    """Ask the default DVC remote which of the files of `found` (readable versions only) it holds."""
    config = versions.cache.dvc.config
    name, configured = config["core"].get("remote"), sorted(config["remote"])
    if not name:
        return RemoteCheck(None, configured)
    wanted = {v.pins.adapter.md5: objects(versions, v) for v in found if v.metadata is not None}
    everything = sorted(set().union(*wanted.values()))
    try:
        odb = versions.cache.dvc.cloud.get_remote_odb(name, command="list")
        present = set(odb.oids_exist(everything)) if everything else set()
    except Exception as err:  # DVC and its file systems raise many kinds: all mean "not asked"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return RemoteCheck(name, configured, problem=f"could not ask DVC remote {name!r} ({reason})")
    local = versions.cache.dvc.cache.local
    only_here = {oid for oid in everything if oid not in present and local.exists(oid)}
    return RemoteCheck(name, configured, {md5: len(oids & only_here) for md5, oids in wanted.items()})


def objects(versions: Versions, version: Version) -> set[str]:
    """The DVC objects of a version's adapter and base: `.dir` manifests and the files they list."""
    oids = set()
    for out in (version.pins.adapter, version.pins.base):
        if out is None:
            continue
        oids.add(out.md5)
        with suppress(UserError):  # a damaged manifest: `list` reports it with the version
            oids |= set(versions.cache.recorded_md5(out).values())
    return oids
