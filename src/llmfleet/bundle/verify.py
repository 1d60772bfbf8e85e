"""`llmfleet bundle verify DIR`: recompute every checksum and check every signature.

Signatures are checked with `gpgv` against DIR/keys/llmfleet-bundle.gpg only (never the
signing home): manifest.json.asc, and InRelease and Release.gpg of every apt repository.
Each problem is one line: `<path>  expected <sha256>  actual <sha256>`, `<path>  missing`,
`<path>  bad signature (...)`, or another short reason.

Only what is inside DIR is read: a symbolic link anywhere in the bundle whose target leaves
it is a problem of its own (the mirror's web server would follow it), and no file is read
through one. A malformed manifest field or an unreadable file is a problem line naming the
field or the file, never a traceback. `--fingerprint` pins the key's fingerprint,
`--key-sha256` the sha256 of keys/llmfleet-bundle.gpg (what inventories pin as
`llmfleet_bundle_key_sha256`).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfleet_bundle import (
    MANIFEST,
    SIGNATURE,
    SUMS,
    artifact_problem,
    parse_manifest,
    path_problem,
)

from llmfleet.bundle.apt_repo import INDEX_FILES, parse_control, release_hashes
from llmfleet.bundle.fetch import sha256_file
from llmfleet.bundle.manifest import CACHE_DIR, bundle_files, render_sums
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


class _Files:
    """The bundle's files, read only where they really are: inside the bundle."""

    def __init__(self, bundle: Path) -> None:
        self.bundle = bundle
        self.real = bundle.resolve()

    def leaves(self, path: Path) -> bool:
        """Whether `path` (under the bundle) resolves outside it, through a symbolic link."""
        try:
            return not path.resolve().is_relative_to(self.real)
        except (OSError, RuntimeError):  # a loop of links
            return True

    def file(self, relative: Any) -> tuple[Path | None, Problem | None]:
        """The bundle's file at `relative`, or why it cannot be read."""
        where = relative if isinstance(relative, str) and relative else MANIFEST
        if path_problem(relative):
            return None, Problem(where, "path leaves the bundle")
        path = self.bundle / relative
        if self.leaves(path):
            return None, Problem(relative, "leads out of the bundle through a symbolic link")
        if path.is_dir():
            return None, Problem(relative, "is a folder, not a file")
        if not path.is_file():
            return None, Problem(relative, "missing")
        return path, None

    def read(self, relative: str) -> tuple[bytes | None, Problem | None]:
        path, problem = self.file(relative)
        if path is None:
            return None, problem
        try:
            return path.read_bytes(), None
        except OSError as exc:
            return None, Problem(relative, f"cannot read it: {exc.strerror or exc}")

    def sha256(self, relative: str) -> tuple[str | None, Problem | None]:
        path, problem = self.file(relative)
        if path is None:
            return None, problem
        try:
            return sha256_file(path), None
        except OSError as exc:
            return None, Problem(relative, f"cannot read it: {exc.strerror or exc}")

    def links_out(self) -> list[Problem]:
        """Every symbolic link in the bundle (the build cache aside) that leaves it."""
        problems = []
        for root, dirs, files in os.walk(self.bundle):
            here = Path(root)
            if here == self.bundle:
                dirs[:] = [d for d in dirs if d != CACHE_DIR]
            for name in [*dirs, *files]:
                path = here / name
                if path.is_symlink() and self.leaves(path):
                    relative = path.relative_to(self.bundle).as_posix()
                    target = os.readlink(path)
                    problems.append(
                        Problem(relative, f"symbolic link to {target} leaves the bundle")
                    )
        return problems


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _artifacts(manifest: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """The manifest's well-formed artifacts by path, and a problem per malformed entry."""
    entries = manifest.get("artifacts")
    if not isinstance(entries, list):
        return {}, [Problem(MANIFEST, f"artifacts must be a list of objects, not {_kind(entries)}")]
    artifacts: dict[str, dict[str, Any]] = {}
    problems = []
    for position, entry in enumerate(entries):
        problem = artifact_problem(entry)
        if problem is None:
            artifacts[entry["path"]] = entry
        elif isinstance(entry, dict) and path_problem(entry.get("path")) and entry.get("path"):
            problems.append(Problem(str(entry["path"]), "path leaves the bundle"))
        else:
            problems.append(Problem(MANIFEST, f"artifacts[{position}]: {problem}"))
    return artifacts, problems


def verify_bundle(
    bundle: Path, fingerprint: str | None = None, key_sha256: str | None = None
) -> tuple[list[Problem], Summary | None]:
    """Every problem of the bundle (empty when it is sound) and, when sound, a summary.

    `fingerprint` pins the bundle key's fingerprint, `key_sha256` the sha256 of its keyring
    file (keys/llmfleet-bundle.gpg).
    """
    files = _Files(bundle)
    problems: list[Problem] = files.links_out()
    data, problem = files.read(MANIFEST)
    if data is None:
        return sorted({*problems, problem or Problem(MANIFEST, "missing")}), None
    try:
        manifest = parse_manifest(data)
    except ValueError as exc:
        return sorted({*problems, Problem(MANIFEST, str(exc))}), None
    except RecursionError:
        return sorted({*problems, Problem(MANIFEST, "is nested too deeply to be a manifest")}), None

    key = manifest.get("signing_key") if isinstance(manifest.get("signing_key"), dict) else {}
    expected_fpr = str(key.get("fingerprint", "")).upper()
    keyring, key_problems = _check_key(files, key, expected_fpr, fingerprint, key_sha256)
    problems += key_problems
    if keyring is not None:
        problems += _check_signature(files, keyring, SIGNATURE, MANIFEST, MANIFEST, key)

    artifacts, malformed = _artifacts(manifest)
    problems += malformed
    total = 0
    for path, entry in sorted(artifacts.items()):
        actual, problem = files.sha256(path)
        if actual is None:
            problems.append(problem or Problem(path, "missing"))
            continue
        total += (bundle / path).stat().st_size
        if actual != entry["sha256"]:
            problems.append(mismatch(path, entry["sha256"], actual))
    for path in bundle_files(bundle):
        if path not in artifacts:
            problems.append(Problem(path, "not in the manifest"))

    sums, problem = files.read(SUMS)
    if sums is None:
        problems.append(problem or Problem(SUMS, "missing"))
    elif not malformed and sums != render_sums(manifest):
        problems.append(Problem(SUMS, "does not match manifest.json"))

    apt = manifest.get("apt", {})
    if not isinstance(apt, dict):
        problems.append(Problem(MANIFEST, f"apt must be an object, not {_kind(apt)}"))
        apt = {}
    for name, section in sorted(apt.items()):
        if not isinstance(section, dict):
            problems.append(
                Problem(MANIFEST, f"apt.{name} must be an object, not {_kind(section)}")
            )
        elif keyring is not None:
            problems += _check_repo(files, name, section, keyring, key, artifacts)

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
    files: _Files,
    key: dict[str, Any],
    expected_fpr: str,
    pinned: str | None,
    pinned_sha256: str | None,
) -> tuple[Path | None, list[Problem]]:
    """The keyring to check signatures with (None when there is none to trust) and the
    problems of the key: its checksum, its fingerprint, the pins."""
    raw_path = key.get("path")
    if path_problem(raw_path):
        return None, [Problem(MANIFEST, "signing_key.path is missing or leaves the bundle")]
    path = str(raw_path)
    keyring, problem = files.file(path)
    actual_sha, problem = files.sha256(path) if keyring is not None else (None, problem)
    if keyring is None or actual_sha is None:
        return None, [problem or Problem(path, "missing")]
    problems = []
    if actual_sha != key.get("sha256"):
        problems.append(mismatch(path, str(key.get("sha256")), actual_sha))
    if pinned_sha256 is not None:
        want = pinned_sha256.strip().lower()
        if actual_sha != want:
            problems.append(mismatch(path, f"{want} (pinned by --key-sha256)", actual_sha))
    try:
        found = key_fingerprints(keyring)
    except SigningError as exc:
        return keyring, [*problems, Problem(path, f"not a keyring: {exc}")]
    if found != [expected_fpr]:
        problems.append(
            Problem(path, f"holds {', '.join(found) or 'no key'}, the manifest says {expected_fpr}")
        )
    if pinned is not None:
        want = re.sub(r"\s+", "", pinned).upper()
        if expected_fpr != want:
            problems.append(Problem(path, f"key {expected_fpr} is not the pinned key {want}"))
    return keyring, problems


def _check_signature(
    files: _Files,
    keyring: Path,
    signature: str,
    data: str | None,
    label: str,
    key: dict[str, Any],
) -> list[Problem]:
    """gpgv's check of the bundle file `signature` (detached over the file `data`)."""
    signature_path = files.bundle / signature
    if files.leaves(signature_path):
        return [Problem(signature, "leads out of the bundle through a symbolic link")]
    data_path = None
    if data is not None:
        data_path, problem = files.file(data)
        if data_path is None:
            return [problem or Problem(data, "missing")]
    check = gpgv_check(keyring, signature_path, data_path)
    if not check.ok:
        return [Problem(label, f"bad signature ({signature_path.name}: {check.detail})")]
    if check.fingerprint != str(key.get("fingerprint", "")).upper():
        return [Problem(label, f"bad signature ({signature_path.name}: by {check.fingerprint})")]
    return []


def _check_repo(
    files: _Files,
    name: str,
    section: dict[str, Any],
    keyring: Path,
    key: dict[str, Any],
    artifacts: dict[str, dict[str, Any]],
) -> list[Problem]:
    base = f"apt/{name}"
    if path_problem(base):
        return [Problem(MANIFEST, f"apt.{name}: the repository's name leaves the bundle")]
    texts: dict[str, bytes] = {}
    problems: list[Problem] = []
    for index in INDEX_FILES:
        data, problem = files.read(f"{base}/{index}")
        if data is None:
            problems.append(problem or Problem(f"{base}/{index}", "missing"))
        else:
            texts[index] = data
    if problems:
        return problems
    problems += _check_signature(
        files, keyring, f"{base}/Release.gpg", f"{base}/Release", f"{base}/Release.gpg", key
    )
    inline = gpgv_check(keyring, files.bundle / base / "InRelease")
    if not inline.ok:
        problems.append(Problem(f"{base}/InRelease", f"bad signature ({inline.detail})"))
    elif inline.signed_text != texts["Release"]:
        problems.append(Problem(f"{base}/InRelease", "signed text differs from Release"))

    hashes = release_hashes(texts["Release"].decode(errors="replace"))
    for index in ("Packages", "Packages.gz"):
        if index not in hashes:
            problems.append(Problem(f"{base}/Release", f"has no SHA256 line for {index}"))
            continue
        actual = hashlib.sha256(texts[index]).hexdigest()
        if actual != hashes[index][0]:
            problems.append(mismatch(f"{base}/{index}", f"{hashes[index][0]} (Release)", actual))

    listed: dict[str, str] = {}
    for stanza in parse_control(texts["Packages"].decode(errors="replace")):
        filename = stanza.get("Filename", "")
        path = f"{base}/{filename.removeprefix('./')}"
        listed[path] = stanza.get("SHA256", "")
    raw_debs = section.get("debs", [])
    if not isinstance(raw_debs, list):
        problems.append(
            Problem(MANIFEST, f"apt.{name}.debs must be a list of objects, not {_kind(raw_debs)}")
        )
        raw_debs = []
    debs = {d.get("path") for d in raw_debs if isinstance(d, dict)}
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
