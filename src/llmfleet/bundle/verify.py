"""`llmfleet bundle verify DIR`: recompute every checksum and check every signature.

Signatures are checked with `gpgv` against DIR/keys/llmfleet-bundle.gpg only (never the
signing home): manifest.json.asc, and InRelease and Release.gpg of every apt repository.
Each problem is one line: `<path>  expected <sha256>  actual <sha256>`, `<path>  missing`,
`<path>  bad signature (...)`, or another short reason.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfleet_bundle import (
    MANIFEST,
    SHA256_RE,
    SIGNATURE,
    SUMS,
    artifacts_by_path,
    parse_manifest,
    path_problem,
)

from llmfleet.bundle.apt_repo import INDEX_FILES, parse_control, release_hashes
from llmfleet.bundle.fetch import sha256_file
from llmfleet.bundle.manifest import bundle_files, render_sums
from llmfleet.bundle.signing import SigningError, gpgv_check, key_fingerprints


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    message: str

    def line(self) -> str:
        return f"{self.path}  {self.message}"


@dataclass(frozen=True)
class Summary:
    name: str
    artifacts: int
    size: int
    repos: int
    fingerprint: str

    def line(self) -> str:
        return (
            f"OK: bundle {self.name}: {self.artifacts} artifacts ({self.size / 1e6:.1f} MB), "
            f"{self.repos} apt repo{'s' if self.repos != 1 else ''}, checksums and signatures "
            f"verified, signed by {self.fingerprint}"
        )


def mismatch(path: str, expected: str, actual: str) -> Problem:
    return Problem(path, f"expected {expected}  actual {actual}")


def _safe(bundle: Path, path: Any) -> Path | None:
    """`bundle/path` when `path` is a relative path that stays inside the bundle."""
    return None if path_problem(path) else bundle / path


def verify_bundle(
    bundle: Path, fingerprint: str | None = None
) -> tuple[list[Problem], Summary | None]:
    """Every problem of the bundle (empty when it is sound) and, when sound, a summary."""
    problems: list[Problem] = []
    manifest_path = bundle / MANIFEST
    if not manifest_path.is_file():
        return [Problem(MANIFEST, "missing")], None
    try:
        manifest = parse_manifest(manifest_path.read_bytes())
    except ValueError as exc:
        return [Problem(MANIFEST, str(exc))], None

    key = manifest.get("signing_key") if isinstance(manifest.get("signing_key"), dict) else {}
    keyring = _safe(bundle, key.get("path"))
    expected_fpr = str(key.get("fingerprint", "")).upper()
    problems += _check_key(keyring, key, expected_fpr, fingerprint)
    if keyring is not None:
        problems += _check_signature(keyring, bundle / SIGNATURE, manifest_path, MANIFEST, key)

    artifacts = artifacts_by_path(manifest)
    total = 0
    for path, entry in sorted(artifacts.items()):
        target = _safe(bundle, path)
        expected = str(entry.get("sha256", ""))
        if target is None:
            problems.append(Problem(path, "path leaves the bundle"))
        elif not target.is_file():
            problems.append(Problem(path, "missing"))
        elif not SHA256_RE.match(expected):
            problems.append(Problem(path, f"the manifest's sha256 {expected!r} is malformed"))
        else:
            actual = sha256_file(target)
            total += target.stat().st_size
            if actual != expected:
                problems.append(mismatch(path, expected, actual))
    for path in bundle_files(bundle):
        if path not in artifacts:
            problems.append(Problem(path, "not in the manifest"))

    sums = bundle / SUMS
    if not sums.is_file():
        problems.append(Problem(SUMS, "missing"))
    elif sums.read_bytes() != render_sums(manifest):
        problems.append(Problem(SUMS, "does not match manifest.json"))

    apt = manifest.get("apt") if isinstance(manifest.get("apt"), dict) else {}
    for name, section in sorted(apt.items()):
        if keyring is not None and isinstance(section, dict):
            problems += _check_repo(bundle, name, section, keyring, key, artifacts)

    unique = sorted(set(problems), key=lambda p: (p.path, p.message))
    if unique:
        return unique, None
    return [], Summary(
        name=str(manifest.get("name", "")),
        artifacts=len(artifacts),
        size=total,
        repos=len(apt),
        fingerprint=expected_fpr,
    )


def _check_key(
    keyring: Path | None, key: dict[str, Any], expected_fpr: str, pinned: str | None
) -> list[Problem]:
    path = str(key.get("path", "keys/llmfleet-bundle.gpg"))
    if keyring is None:
        return [Problem(MANIFEST, "signing_key.path is missing or leaves the bundle")]
    if not keyring.is_file():
        return [Problem(path, "missing")]
    problems = []
    actual_sha = sha256_file(keyring)
    if actual_sha != key.get("sha256"):
        problems.append(mismatch(path, str(key.get("sha256")), actual_sha))
    try:
        found = key_fingerprints(keyring)
    except SigningError as exc:
        return [*problems, Problem(path, f"not a keyring: {exc}")]
    if found != [expected_fpr]:
        problems.append(
            Problem(path, f"holds {', '.join(found) or 'no key'}, the manifest says {expected_fpr}")
        )
    if pinned is not None:
        want = re.sub(r"\s+", "", pinned).upper()
        if expected_fpr != want:
            problems.append(Problem(path, f"key {expected_fpr} is not the pinned key {want}"))
    return problems


def _check_signature(
    keyring: Path, signature: Path, data: Path | None, label: str, key: dict[str, Any]
) -> list[Problem]:
    check = gpgv_check(keyring, signature, data)
    if not check.ok:
        return [Problem(label, f"bad signature ({signature.name}: {check.detail})")]
    if check.fingerprint != str(key.get("fingerprint", "")).upper():
        return [Problem(label, f"bad signature ({signature.name}: by {check.fingerprint})")]
    return []


def _check_repo(
    bundle: Path,
    name: str,
    section: dict[str, Any],
    keyring: Path,
    key: dict[str, Any],
    artifacts: dict[str, dict[str, Any]],
) -> list[Problem]:
    base = f"apt/{name}"
    repo = bundle / base
    missing = [Problem(f"{base}/{n}", "missing") for n in INDEX_FILES if not (repo / n).is_file()]
    if missing:
        return missing
    problems: list[Problem] = []
    release = repo / "Release"
    problems += _check_signature(keyring, repo / "Release.gpg", release, f"{base}/Release.gpg", key)
    inline = gpgv_check(keyring, repo / "InRelease")
    if not inline.ok:
        problems.append(Problem(f"{base}/InRelease", f"bad signature ({inline.detail})"))
    elif inline.signed_text != release.read_bytes():
        problems.append(Problem(f"{base}/InRelease", "signed text differs from Release"))

    hashes = release_hashes(release.read_text(errors="replace"))
    for index in ("Packages", "Packages.gz"):
        if index not in hashes:
            problems.append(Problem(f"{base}/Release", f"has no SHA256 line for {index}"))
            continue
        data = (repo / index).read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != hashes[index][0]:
            problems.append(mismatch(f"{base}/{index}", f"{hashes[index][0]} (Release)", actual))

    listed: dict[str, str] = {}
    for stanza in parse_control((repo / "Packages").read_text(errors="replace")):
        filename = stanza.get("Filename", "")
        path = f"{base}/{filename.removeprefix('./')}"
        listed[path] = stanza.get("SHA256", "")
    debs = {d.get("path") for d in section.get("debs", []) if isinstance(d, dict)}
    for path, sha in sorted(listed.items()):
        entry = artifacts.get(path)
        if entry is None or path not in debs:
            problems.append(Problem(path, "listed in Packages but not in the manifest"))
        elif entry.get("sha256") != sha:
            problems.append(
                mismatch(path, f"{entry.get('sha256')} (manifest)", f"{sha} (Packages)")
            )
    for path in sorted(p for p in debs if isinstance(p, str) and p not in listed):
        problems.append(Problem(path, "in the manifest but not listed in Packages"))
    return problems
