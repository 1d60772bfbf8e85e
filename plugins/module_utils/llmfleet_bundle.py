"""The llmfleet bundle's manifest format and its signature check: the one owner of both.

`llmfleet bundle build` writes manifest.json (and signs it), `llmfleet bundle verify` and the
`bundle_manifest` module read it; all three take the format (file names, the artifact
fields, what a safe path and a sha256 look like) and the gpgv check from here. Ansible ships
this file to the target hosts (as ``ansible.module_utils.llmfleet_bundle``); the llmfleet
package installs the same file as the top-level module ``llmfleet_bundle`` (see
pyproject.toml). So: no Ansible import, no third-party import, and Python 3.10 (Ubuntu
22.04's) is enough.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

#: The manifest format this code writes and reads.
FORMAT = 1
SUPPORTED_FORMATS = (FORMAT,)
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.asc"
SUMS = "SHA256SUMS"
KEYRING = "keys/llmfleet-bundle.gpg"
KEY_ARMORED = "keys/llmfleet-bundle.asc"
#: The kinds of artifact a manifest lists.
KINDS = ("file", "deb", "key", "apt-index", "image")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# --- the manifest ----------------------------------------------------------------------------


def path_problem(path: Any) -> str | None:
    """Why `path` is not a relative path that stays inside the bundle, or None."""
    if not isinstance(path, str) or not path:
        return "missing path"
    if path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        return f"path {path!r} leaves the bundle"
    return None


def parse_manifest(text: Any) -> dict[str, Any]:
    """The manifest as a dict, when it is JSON, an object and of a supported format.

    ValueError with a message a person can act on otherwise. The artifacts are not checked
    (see `load_manifest` and `artifact_problem`).
    """
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{MANIFEST} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ValueError(f"{MANIFEST} is not a JSON object")
    if manifest.get("format") not in SUPPORTED_FORMATS:
        raise ValueError(
            f"manifest format {manifest.get('format')!r} is not supported "
            f"(this llmfleet reads {', '.join(map(str, SUPPORTED_FORMATS))})"
        )
    return manifest


def artifact_problem(artifact: Any) -> str | None:
    """What is wrong with one entry of the manifest's artifacts, or None."""
    if not isinstance(artifact, dict):
        return "not an object"
    for key in ("name", "path", "sha256"):
        if not isinstance(artifact.get(key), str) or not artifact[key]:
            return f"missing {key}"
    if not SHA256_RE.match(artifact["sha256"]):
        return f"{artifact['path']}: sha256 {artifact['sha256']!r} is not 64 lowercase hex digits"
    return path_problem(artifact["path"])


def load_manifest(text: Any) -> dict[str, Any]:
    """Parse and check a manifest and each of its artifacts; ValueError names the problem."""
    manifest = parse_manifest(text)
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, list):
        raise ValueError(f"{MANIFEST} has no artifacts list")
    for position, artifact in enumerate(artifacts):
        problem = artifact_problem(artifact)
        if problem:
            raise ValueError(f"manifest artifacts[{position}]: {problem}")
    return manifest


def artifacts_by_path(manifest: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The manifest's artifacts by their path (entries without a path string are skipped)."""
    if not manifest or not isinstance(manifest.get("artifacts"), list):
        return {}
    return {
        entry["path"]: entry
        for entry in manifest["artifacts"]
        if isinstance(entry, dict) and isinstance(entry.get("path"), str)
    }


def index_artifacts(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Artifacts by logical name, each with path, sha256, size and kind (images: and tag)."""
    index: dict[str, dict[str, Any]] = {}
    for artifact in manifest["artifacts"]:
        name = artifact["name"]
        if name in index:
            raise ValueError(f"manifest names artifact {name!r} twice")
        index[name] = {
            "path": artifact["path"],
            "sha256": artifact["sha256"],
            "size": artifact.get("size"),
            "kind": artifact.get("kind"),
        }
        if artifact.get("tag"):
            index[name]["tag"] = artifact["tag"]
    return index


def join_url(base: str, path: str) -> str:
    """`base` (a bundle's URL, with or without a trailing slash) joined with a bundle path."""
    return base.rstrip("/") + "/" + path.lstrip("/")


# --- the signature check (gpgv) ----------------------------------------------------------------

#: Runs a command: argv -> (exit status, stdout, stderr), as AnsibleModule.run_command does.
Runner = Callable[[list[str]], tuple[int, str, str]]


class SignatureCheck(NamedTuple):
    """The outcome of a gpgv check: ok, the signing key's fingerprint, why not, signed text."""

    ok: bool
    fingerprint: str | None = None
    detail: str = ""
    signed_text: bytes | None = None


def gpgv_command(
    gpgv: str, home: str, keyring: str, signature: str, data: str | None, output: str
) -> list[str]:
    """gpgv with only `keyring`'s keys, a throwaway home, and status lines on stdout.

    Detached (`data` given) or clearsigned (the signed text is written to `output`).
    """
    command = [gpgv, "--homedir", home, "--status-fd", "1", "--keyring", keyring]
    if data is None:
        return [*command, "--output", output, signature]
    return [*command, signature, data]


def valid_signature(status: str) -> str | None:
    """The fingerprint of the key that made a good signature, from gpgv's status lines."""
    fingerprint = None
    for line in status.splitlines():
        fields = line.split()
        if fields[:2] == ["[GNUPG:]", "VALIDSIG"] and len(fields) >= 3:
            fingerprint = fields[-1]
    return fingerprint


def gpgv_verify(
    run: Runner,
    keyring: str,
    signature: str,
    data: str | None,
    workdir: str,
    gpgv: str = "gpgv",
) -> SignatureCheck:
    """Check `signature` (detached over `data`, or clearsigned when `data` is None).

    Only the keys in `keyring` count; `workdir` is an empty private folder that gpgv may use
    as its home (nothing of the caller's GnuPG home is read). For a clearsigned file the
    signed text comes back in `signed_text`.
    """
    if not os.path.isfile(keyring):
        return SignatureCheck(False, detail=f"no keyring {keyring}")
    if not os.path.isfile(signature):
        return SignatureCheck(False, detail="signature missing")
    output = os.path.join(workdir, "signed.txt")
    command = gpgv_command(gpgv, workdir, os.path.abspath(keyring), signature, data, output)
    rc, out, err = run(command)
    fingerprint = valid_signature(out)
    if rc != 0 or fingerprint is None:
        lines = err.strip().splitlines()
        return SignatureCheck(False, detail=lines[-1] if lines else "no valid signature")
    signed = None
    if data is None and os.path.isfile(output):
        with open(output, "rb") as handle:
            signed = handle.read()
    return SignatureCheck(True, fingerprint=fingerprint, signed_text=signed)
