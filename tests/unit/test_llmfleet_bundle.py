"""plugins/module_utils/llmfleet_bundle.py: the manifest format and the gpgv check, one owner.

The builder, `bundle verify` and the bundle_manifest module all use this file; these tests
pin its functions (gpgv itself runs in test_bundle_build.py and test_bundle_manifest_module.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import llmfleet_bundle as lb
import pytest

from llmfleet.bundle import manifest, signing, verify

REPO = Path(__file__).resolve().parents[2]
FPR = "D" * 40


def test_the_cli_uses_the_module_utils_file_itself() -> None:
    assert Path(lb.__file__).resolve() == REPO / "plugins/module_utils/llmfleet_bundle.py"
    assert manifest.parse_manifest is lb.parse_manifest
    assert verify.path_problem is lb.path_problem
    assert signing.SignatureCheck is lb.SignatureCheck


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("files/x.tar.gz", None),
        ("apt/debian12/jq_1_amd64.deb", None),
        ("/etc/passwd", "path '/etc/passwd' leaves the bundle"),
        ("files/../../x", "path 'files/../../x' leaves the bundle"),
        ("files//x", "path 'files//x' leaves the bundle"),
        ("./files/x", "path './files/x' leaves the bundle"),
        ("", "missing path"),
        (None, "missing path"),
    ],
)
def test_path_problem(path: object, problem: str | None) -> None:
    assert lb.path_problem(path) == problem


def test_parse_manifest_checks_json_object_and_format() -> None:
    assert lb.parse_manifest(b'{"format": 1, "name": "ci"}') == {"format": 1, "name": "ci"}
    with pytest.raises(ValueError, match=r"manifest\.json is not JSON"):
        lb.parse_manifest("{")
    with pytest.raises(ValueError, match=r"manifest\.json is not a JSON object"):
        lb.parse_manifest("[1]")
    with pytest.raises(ValueError, match=r"manifest format None is not supported \(this llmfleet"):
        lb.parse_manifest("{}")


@pytest.mark.parametrize(
    ("artifact", "problem"),
    [
        ({"name": "a", "path": "files/a", "sha256": "a" * 64}, None),
        ("a", "not an object"),
        ({"path": "files/a", "sha256": "a" * 64}, "missing name"),
        ({"name": "a", "path": "files/a", "sha256": "A" * 64}, "is not 64 lowercase hex digits"),
        ({"name": "a", "path": "../a", "sha256": "a" * 64}, "path '../a' leaves the bundle"),
    ],
)
def test_artifact_problem(artifact: object, problem: str | None) -> None:
    found = lb.artifact_problem(artifact)
    assert found == problem if problem is None else problem in str(found)


def test_load_manifest_names_the_artifact_and_artifacts_by_path() -> None:
    good = {"name": "a", "path": "files/a", "sha256": "a" * 64}
    document = {"format": 1, "artifacts": [good, {**good, "name": ""}]}
    with pytest.raises(ValueError, match=r"manifest artifacts\[1\]: missing name"):
        lb.load_manifest(json.dumps(document))
    with pytest.raises(ValueError, match="has no artifacts list"):
        lb.load_manifest('{"format": 1}')
    assert lb.artifacts_by_path({"artifacts": [good, {"path": 3}, "x"]}) == {"files/a": good}
    assert lb.artifacts_by_path(None) == {}


def test_gpgv_command_and_its_status_lines() -> None:
    detached = lb.gpgv_command("gpgv", "/h", "/k.gpg", "/m.asc", "/m", "/h/out")
    assert detached == [
        *("gpgv", "--homedir", "/h", "--status-fd", "1", "--keyring", "/k.gpg"),
        *("/m.asc", "/m"),
    ]
    clearsigned = lb.gpgv_command("gpgv", "/h", "/k.gpg", "/InRelease", None, "/h/out")
    assert clearsigned[-3:] == ["--output", "/h/out", "/InRelease"]
    status = (
        f"[GNUPG:] GOODSIG 1234 x\n[GNUPG:] VALIDSIG {'E' * 40} 2026-01-01 0 4 0 22 10 00 {FPR}"
    )
    assert lb.valid_signature(status) == FPR  # the primary key's, the last field
    assert lb.valid_signature("[GNUPG:] BADSIG 1234 x\n") is None


class FakeGpgv:
    """Answers like gpgv; writes the signed text when asked for --output."""

    def __init__(self, rc: int, out: str, err: str = "") -> None:
        self.rc, self.out, self.err = rc, out, err
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str]) -> tuple[int, str, str]:
        self.commands.append(command)
        if "--output" in command:
            Path(command[command.index("--output") + 1]).write_bytes(b"Origin: llmfleet\n")
        return self.rc, self.out, self.err


def test_gpgv_verify(tmp_path: Path) -> None:
    keyring, signature, data = (tmp_path / name for name in ("k.gpg", "m.asc", "m"))
    for path in (keyring, signature, data):
        path.write_text("x")
    home = tmp_path / "home"
    home.mkdir()
    good = FakeGpgv(0, f"[GNUPG:] VALIDSIG x {FPR}\n")
    check = lb.gpgv_verify(good, str(keyring), str(signature), str(data), str(home))
    assert check == lb.SignatureCheck(True, fingerprint=FPR)
    assert good.commands[0][:3] == ["gpgv", "--homedir", str(home)]
    clearsigned = lb.gpgv_verify(good, str(keyring), str(signature), None, str(home))
    assert clearsigned.signed_text == b"Origin: llmfleet\n"
    bad = FakeGpgv(1, "[GNUPG:] BADSIG 1234 x\n", "gpgv: Signature made ...\ngpgv: BAD signature")
    assert lb.gpgv_verify(bad, str(keyring), str(signature), str(data), str(home)) == (
        lb.SignatureCheck(False, detail="gpgv: BAD signature")
    )
    silent = FakeGpgv(0, "")  # exit 0 without a VALIDSIG line is no good signature either
    assert not lb.gpgv_verify(silent, str(keyring), str(signature), str(data), str(home)).ok
    missing = lb.gpgv_verify(good, str(tmp_path / "none.gpg"), str(signature), None, str(home))
    assert missing.detail == f"no keyring {tmp_path / 'none.gpg'}"
    unsigned = lb.gpgv_verify(good, str(keyring), str(tmp_path / "none.asc"), None, str(home))
    assert unsigned.detail == "signature missing"
    assert len(good.commands) == 2  # nothing is run for a missing keyring or signature
