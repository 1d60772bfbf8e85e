"""manifest.json and SHA256SUMS: pure functions from the list of artifacts.

The format itself (file names, artifact fields, safe paths, the version) belongs to
plugins/module_utils/llmfleet_bundle.py, which the `bundle_manifest` module reads manifests
with; this module writes what that one reads. The manifest is deterministic (artifacts sorted
by path, debs sorted by path), so a rebuild that changes nothing renders the same bytes;
`created` is then carried over from the previous manifest and nothing is rewritten.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmfleet_bundle import FORMAT, KEYRING, MANIFEST, SIGNATURE, SUMS, parse_manifest

if TYPE_CHECKING:  # annotations only: this module needs no third-party package (test_packaging)
    from llmfleet.bundle.apt_repo import DebRef
    from llmfleet.bundle.spec import AptRepo

#: Files under the bundle that are not artifacts (the manifest itself and the build cache).
NOT_ARTIFACTS = (MANIFEST, SIGNATURE, SUMS)
CACHE_DIR = ".cache"


@dataclass(frozen=True)
class Artifact:
    """One file of the bundle, as the manifest lists it."""

    name: str
    kind: str
    path: str
    sha256: str
    size: int
    source: str
    member: str | None = None
    archive_sha256: str | None = None
    #: images: the tag `docker load` restores and the sha256 of the build's inputs
    tag: str | None = None
    inputs_sha256: str | None = None

    @classmethod
    def unchecked(cls, name: str, kind: str, path: str, source: str, **extra: Any) -> Artifact:
        """The artifact before its file is in place: `with_checksum` completes it."""
        return cls(name=name, kind=kind, path=path, sha256="", size=0, source=source, **extra)

    def with_checksum(self, sha256: str, size: int) -> Artifact:
        return replace(self, sha256=sha256, size=size)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's entry: the fields in their order, the optional ones when set."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class AptSection:
    """The manifest's record of one apt repository: the spec's entry and the debs it resolved
    to, each at `apt/<repo>/<pool name>`."""

    repo: AptRepo
    debs: tuple[DebRef, ...]

    @property
    def name(self) -> str:
        return self.repo.name

    @property
    def path(self) -> str:
        return f"apt/{self.name}"

    def deb_path(self, deb: DebRef) -> str:
        return f"{self.path}/{deb.pool_name}"

    def to_dict(self) -> dict[str, Any]:
        debs = sorted(self.debs, key=self.deb_path)
        return {
            "path": self.path,
            "packages": list(self.repo.packages),
            "architecture": self.repo.architecture,
            "debs": [
                {"package": deb.package, "version": deb.version, "path": self.deb_path(deb)}
                for deb in debs
            ],
        }


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_manifest(
    name: str,
    fingerprint: str,
    key_sha256: str,
    apt: list[AptSection],
    artifacts: list[Artifact],
    created: str,
) -> dict[str, Any]:
    """The manifest as a dict, in the documented key order, everything sorted."""
    paths = [artifact.path for artifact in artifacts]
    duplicates = sorted({path for path in paths if paths.count(path) > 1})
    if duplicates:
        raise ValueError(f"two artifacts share the path {duplicates[0]}")
    names = [artifact.name for artifact in artifacts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two artifacts share the name {duplicates[0]}")
    return {
        "format": FORMAT,
        "name": name,
        "created": created,
        "signing_key": {"fingerprint": fingerprint, "path": KEYRING, "sha256": key_sha256},
        "apt": {section.name: section.to_dict() for section in sorted(apt, key=lambda s: s.name)},
        "artifacts": [a.to_dict() for a in sorted(artifacts, key=lambda a: a.path)],
    }


def render_manifest(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()


def render_sums(manifest: dict[str, Any]) -> bytes:
    """SHA256SUMS: `sha256sum -c` compatible, one line per artifact, sorted by path."""
    lines = sorted(
        (artifact["path"], artifact["sha256"]) for artifact in manifest.get("artifacts", [])
    )
    return "".join(f"{sha256}  {path}\n" for path, sha256 in lines).encode()


def same_content(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """True when the two manifests differ at most in `created`."""
    if old is None:
        return False
    strip = {key: value for key, value in old.items() if key != "created"}
    return strip == {key: value for key, value in new.items() if key != "created"}


def read_manifest(bundle: Path) -> dict[str, Any] | None:
    """The bundle's manifest.json, or None when it is missing or not a manifest we read."""
    try:
        return parse_manifest((bundle / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None


def bundle_files(bundle: Path) -> list[str]:
    """Every file under the bundle that must be an artifact, as sorted relative paths."""
    found: list[str] = []
    for root, dirs, files in os.walk(bundle):
        relative = Path(root).relative_to(bundle)
        if relative == Path("."):
            dirs[:] = [d for d in dirs if d != CACHE_DIR]
        # a symbolic link to a folder is listed as a file: it must not hide content
        links = [d for d in dirs if (Path(root) / d).is_symlink()]
        for name in [*files, *links]:
            path = (relative / name).as_posix()
            if path not in NOT_ARTIFACTS:
                found.append(path)
    return sorted(found)
