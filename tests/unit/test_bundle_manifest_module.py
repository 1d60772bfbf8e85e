"""bundle_manifest: reads the mirror's manifest, checks its signature with gpgv."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bundle_manifest
import pytest
from llmfleet_bundle import index_artifacts, join_url, load_manifest

pytestmark = pytest.mark.skipif(
    not (shutil.which("gpg") and shutil.which("gpgv")), reason="gpg and gpgv are not installed"
)

SHA = "a" * 64
MANIFEST = {
    "format": 1,
    "name": "ci",
    "created": "2026-11-25T16:00:00Z",
    "signing_key": {"fingerprint": "F" * 40, "path": "keys/llmfleet-bundle.gpg", "sha256": SHA},
    "artifacts": [
        {
            "name": "llama-cpp-source",
            "kind": "file",
            "path": "files/llama.tar.gz",
            "sha256": SHA,
            "size": 10,
        },
        {"name": "deb:jq", "kind": "deb", "path": "apt/debian12/jq.deb", "sha256": "b" * 64},
    ],
}


@pytest.fixture
def run(ansible_module: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """bundle_manifest with these arguments: the result it exits (or, fails=True, fails) with."""
    return functools.partial(ansible_module, bundle_manifest.main)


@pytest.fixture(scope="module")
def signed_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A bundle folder with a manifest signed by a throwaway key, and that key's keyring."""
    root = tmp_path_factory.mktemp("bundle")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    gpg = [
        "gpg",
        "--batch",
        "--homedir",
        str(home),
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]
    subprocess.run(
        [*gpg, "--quick-gen-key", "test <t@llmfleet.invalid>", "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
    )
    (root / "keys").mkdir()
    subprocess.run(
        [*gpg, "--output", str(root / "keys" / "llmfleet-bundle.gpg"), "--export"],
        check=True,
        capture_output=True,
    )
    (root / "manifest.json").write_text(json.dumps(MANIFEST))
    subprocess.run(
        [
            *gpg,
            "--armor",
            "--detach-sign",
            "--output",
            str(root / "manifest.json.asc"),
            str(root / "manifest.json"),
        ],
        check=True,
        capture_output=True,
    )
    yield root
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


@pytest.fixture
def served(signed_bundle: Path) -> Iterator[str]:
    """The bundle folder over HTTP on loopback, as a mirror serves it."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(signed_bundle))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_reads_a_signed_manifest_over_http(
    run: Callable[..., dict[str, Any]], served: str, signed_bundle: Path
) -> None:
    result = run({"url": served, "keyring": str(signed_bundle / "keys/llmfleet-bundle.gpg")})
    assert result["changed"] is False
    assert result["name"] == "ci"
    assert result["artifacts"]["llama-cpp-source"] == {
        "path": "files/llama.tar.gz",
        "sha256": SHA,
        "size": 10,
        "kind": "file",
    }


def test_reads_a_signed_manifest_from_a_file_url(
    run: Callable[..., dict[str, Any]], signed_bundle: Path
) -> None:
    result = run(
        {
            "url": f"file://{signed_bundle}/",
            "keyring": str(signed_bundle / "keys/llmfleet-bundle.gpg"),
        }
    )
    assert set(result["artifacts"]) == {"llama-cpp-source", "deb:jq"}


def test_a_tampered_manifest_fails_its_signature(
    run: Callable[..., dict[str, Any]], signed_bundle: Path, tmp_path: Path
) -> None:
    tampered = tmp_path / "bundle"
    shutil.copytree(signed_bundle, tampered)
    changed = dict(MANIFEST, artifacts=[dict(MANIFEST["artifacts"][0], sha256="c" * 64)])
    (tampered / "manifest.json").write_text(json.dumps(changed))
    result = run(
        {"url": f"file://{tampered}", "keyring": str(tampered / "keys/llmfleet-bundle.gpg")},
        fails=True,
    )
    assert "does not verify" in result["msg"]
    assert str(tampered / "manifest.json") in result["msg"]


def test_an_unreachable_mirror_is_named(run: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    args = {"url": "http://127.0.0.1:9", "keyring": str(tmp_path / "k.gpg"), "timeout": 2}
    result = run(args, fails=True)
    assert result["msg"].startswith(
        "cannot read the bundle manifest http://127.0.0.1:9/manifest.json"
    )


def test_load_manifest_rejects_bad_artifacts() -> None:
    bad = dict(MANIFEST, artifacts=[dict(MANIFEST["artifacts"][0], sha256="XYZ")])
    with pytest.raises(ValueError, match=r"artifacts\[0\]: files/llama.tar.gz: sha256 'XYZ'"):
        load_manifest(json.dumps(bad))
    escaping = dict(MANIFEST, artifacts=[dict(MANIFEST["artifacts"][0], path="../etc/passwd")])
    with pytest.raises(ValueError, match="leaves the bundle"):
        load_manifest(json.dumps(escaping))
    with pytest.raises(ValueError, match="format 2 is not supported"):
        load_manifest(json.dumps(dict(MANIFEST, format=2)))


def test_index_artifacts_rejects_a_name_used_twice() -> None:
    twice = dict(MANIFEST, artifacts=[MANIFEST["artifacts"][0], MANIFEST["artifacts"][0]])
    with pytest.raises(ValueError, match="names artifact 'llama-cpp-source' twice"):
        index_artifacts(twice)


@pytest.mark.parametrize("base", ["http://m", "http://m/", "file:///srv/b/"])
def test_join_url(base: str) -> None:
    assert join_url(base, "files/x") == base.rstrip("/") + "/files/x"
