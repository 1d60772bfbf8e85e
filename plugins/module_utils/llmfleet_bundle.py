"""Reading a bundle manifest (written by `llmfleet bundle build`): pure functions.

Shared by the bundle_manifest module; no Ansible imports, no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
SUPPORTED_FORMATS = (1,)


def load_manifest(text: str | bytes) -> dict[str, Any]:
    """Parse and check a manifest; ValueError with a message a person can act on."""
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"manifest.json is not JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ValueError("manifest.json is not a JSON object")
    if manifest.get("format") not in SUPPORTED_FORMATS:
        raise ValueError(
            f"manifest format {manifest.get('format')!r} is not supported "
            f"(this llmfleet reads {', '.join(map(str, SUPPORTED_FORMATS))})"
        )
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, list):
        raise ValueError("manifest.json has no artifacts list")
    for position, artifact in enumerate(artifacts):
        problem = _artifact_problem(artifact)
        if problem:
            raise ValueError(f"manifest artifacts[{position}]: {problem}")
    return manifest


def _artifact_problem(artifact: Any) -> str | None:
    if not isinstance(artifact, dict):
        return "not an object"
    for key in ("name", "path", "sha256"):
        if not isinstance(artifact.get(key), str) or not artifact[key]:
            return f"missing {key}"
    if not SHA256_RE.match(artifact["sha256"]):
        return f"{artifact['path']}: sha256 {artifact['sha256']!r} is not 64 lowercase hex digits"
    if artifact["path"].startswith("/") or ".." in artifact["path"].split("/"):
        return f"path {artifact['path']!r} leaves the bundle"
    return None


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
