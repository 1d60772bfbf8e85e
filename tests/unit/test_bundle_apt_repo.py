"""The apt side without Docker: private apt config, sources, parsing apt's answers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from llmfleet.bundle import apt_repo
from llmfleet.bundle.apt_repo import AptError, DebRef
from llmfleet.bundle.fetch import Fetcher
from llmfleet.bundle.spec import parse_spec

ENV = {"LLMFLEET_DEBIAN_MIRROR": "http://deb.example.test/debian"}
FPR = "EB693B3035CD5710E231E123A4B469963BF863CC"


def repo(essential: bool = True, recommends: bool = False) -> apt_repo.AptRepo:
    data = {
        "name": "x",
        "apt": [
            {
                "name": "debian12",
                "image": "debian:12",
                "architecture": "arm64",
                "essential": essential,
                "install_recommends": recommends,
                "sources": [
                    {
                        "uris": "${LLMFLEET_DEBIAN_MIRROR}",
                        "suites": ["bookworm", "bookworm-updates"],
                        "components": ["main", "non-free"],
                        "signed_by": {"path": "/usr/share/keyrings/debian-archive-keyring.gpg"},
                    },
                    {
                        "uris": "https://vendor.test/cuda/x86_64/",
                        "suites": ["/"],
                        "signed_by": {"url": "https://vendor.test/k.pub", "fingerprint": FPR},
                    },
                ],
                "packages": ["nginx", "jq"],
            }
        ],
    }
    return parse_spec(data, ENV).apt[0]


URIS = """\
'http://deb.example.test/debian/pool/main/j/jq/jq_1.6-2.1%2bdeb12u2_amd64.deb' jq_1.6-2.1+deb12u2_amd64.deb 63984 MD5Sum:b9aca00e056b5365d65597df4b338cee
'http://deb.example.test/debian/pool/main/libb/libbpf/libbpf1_1%3a1.1.2-0%2bdeb12u1_amd64.deb' libbpf1_1%3a1.1.2-0+deb12u1_amd64.deb 145032 MD5Sum:00
'https://vendor.test/cuda/x86_64/cuda-keyring_1.1-1_all.deb' cuda-keyring_1.1-1_all.deb 4328 MD5Sum:11
"""  # noqa: E501 - apt's own line format

SHOW = f"""\
Package: jq
Version: 1.6-2.1+deb12u2
Architecture: amd64
Filename: pool/main/j/jq/jq_1.6-2.1+deb12u2_amd64.deb
SHA256: {"a" * 64}
Description: lightweight and flexible command-line JSON processor
 jq is like sed for JSON data

Package: libbpf1
Version: 1:1.1.2-0+deb12u1
Architecture: amd64
SHA256: {"b" * 64}

Package: cuda-keyring
Version: 1.1-1
Architecture: all
SHA256: {"c" * 64}
"""


def test_the_private_apt_config_trusts_only_the_spec() -> None:
    conf = apt_repo.render_apt_conf(repo(), ca_bundle=True)
    for line in (
        'Dir::Etc::SourceList "/llmfleet/etc/sources.list";',
        'Dir::Etc::SourceParts "/llmfleet/etc/sources.list.d";',
        'Dir::Etc::Trusted "/llmfleet/etc/no-trusted/trusted.gpg";',
        'Dir::Etc::TrustedParts "/llmfleet/etc/no-trusted/trusted.gpg.d";',
        'Dir::State::status "/llmfleet/state/status";',
        'Dir::Cache::archives "/llmfleet/archives";',
        'Dir::State::Lists "/llmfleet/lists";',
        'APT::Architecture "arm64";',
        'APT::Architectures { "arm64"; };',
        'APT::Install-Recommends "false";',
        'Acquire::https::CaInfo "/llmfleet/ca-certificates.crt";',
    ):
        assert line in conf.splitlines()
    assert "CaInfo" not in apt_repo.render_apt_conf(repo(), ca_bundle=False)
    assert 'APT::Install-Recommends "true";' in apt_repo.render_apt_conf(
        repo(recommends=True), False
    )


def test_sources_are_deb822_with_signed_by() -> None:
    text = apt_repo.render_sources(repo().sources, {0: "/k/debian.gpg", 1: "/k/vendor.gpg"})
    assert text == (
        "Types: deb\n"
        "URIs: http://deb.example.test/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main non-free\n"
        "Signed-By: /k/debian.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: https://vendor.test/cuda/x86_64/\n"
        "Suites: /\n"
        "Signed-By: /k/vendor.gpg\n"
    )


def test_install_args_add_the_essential_set_on_request() -> None:
    assert apt_repo.install_args(repo()) == ["nginx", "jq", "?essential", "?priority(required)"]
    assert apt_repo.install_args(repo(essential=False)) == ["nginx", "jq"]


def test_the_container_gets_no_secret(tmp_path: Path) -> None:
    command = apt_repo.docker_command(
        repo(), tmp_path / "etc", tmp_path / "a", tmp_path / "l", tmp_path / "o", None
    )
    assert command[:3] == ["docker", "run", "--rm"]
    mounts = [command[i + 1] for i, arg in enumerate(command) if arg == "-v"]
    assert [m.split(":", 1)[1] for m in mounts] == [
        "/llmfleet/etc:ro",
        "/llmfleet/archives",
        "/llmfleet/lists",
        "/llmfleet/out",
    ]
    envs = [command[i + 1] for i, arg in enumerate(command) if arg == "-e"]
    assert [e.split("=")[0] for e in envs] == ["LLMFLEET_OWNER"]
    assert command[-6:] == [
        "debian:12",
        "/llmfleet/etc/resolve.sh",
        "nginx",
        "jq",
        "?essential",
        "?priority(required)",
    ]


def test_closure_joins_print_uris_and_the_index() -> None:
    debs = apt_repo.closure(URIS, SHOW)
    assert [(d.package, d.version, d.architecture, d.pool_name) for d in debs] == [
        ("cuda-keyring", "1.1-1", "all", "cuda-keyring_1.1-1_all.deb"),
        ("jq", "1.6-2.1+deb12u2", "amd64", "jq_1.6-2.1+deb12u2_amd64.deb"),
        ("libbpf1", "1:1.1.2-0+deb12u1", "amd64", "libbpf1_1.1.2-0+deb12u1_amd64.deb"),
    ]
    assert [d.sha256[0] for d in debs] == ["c", "a", "b"]
    assert debs[2].archive_name == "libbpf1_1%3a1.1.2-0+deb12u1_amd64.deb"
    with pytest.raises(AptError, match="did not describe jq"):
        apt_repo.closure(URIS, "")


def test_the_manifest_source_keeps_the_spec_text() -> None:
    sources = repo().sources
    debian = "http://deb.example.test/debian/pool/main/j/jq/jq.deb"
    assert apt_repo.raw_url(debian, sources) == "${LLMFLEET_DEBIAN_MIRROR}/pool/main/j/jq/jq.deb"
    vendor = "https://vendor.test/cuda/x86_64/cuda-keyring_1.1-1_all.deb"
    assert apt_repo.raw_url(vendor, sources) == vendor
    assert apt_repo.raw_url("http://elsewhere.test/x.deb", sources) == "http://elsewhere.test/x.deb"


def test_parse_control_keeps_continuation_lines() -> None:
    stanzas = apt_repo.parse_control(SHOW)
    assert len(stanzas) == 3
    assert stanzas[0]["Description"].endswith("\n jq is like sed for JSON data")


def test_packages_are_sorted_whatever_order_apt_ftparchive_used() -> None:
    a = "Package: b\nFilename: ./b.deb\n\nPackage: a\nFilename: ./a.deb\n"
    b = "Package: a\nFilename: ./a.deb\n\nPackage: b\nFilename: ./b.deb\n\n"
    assert apt_repo.sorted_packages(a) == apt_repo.sorted_packages(b)
    assert apt_repo.sorted_packages(a).startswith("Package: a\n")


def test_release_hashes() -> None:
    release = (
        "Origin: llmfleet\nMD5Sum:\n 00 12 Packages\nSHA256:\n"
        f" {'d' * 64}           140796 Packages\n {'e' * 64}            50786 Packages.gz\n"
    )
    assert apt_repo.release_hashes(release) == {
        "Packages": ("d" * 64, 140796),
        "Packages.gz": ("e" * 64, 50786),
    }


def test_publish_refuses_a_deb_whose_checksum_is_not_the_index(tmp_path: Path) -> None:
    from llmfleet.bundle.fetch import HashCache

    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / "jq_1_amd64.deb").write_bytes(b"tampered")
    deb = DebRef("jq", "1", "amd64", "http://x.test/jq.deb", "jq_1_amd64.deb", 8, "0" * 64)
    with pytest.raises(AptError, match="the index says 0000"):
        apt_repo.publish_debs(
            [deb], archives, tmp_path / "repo", tmp_path / "tmp", HashCache(None), "apt repo x"
        )
    assert not (archives / "jq_1_amd64.deb").exists()  # dropped so the next build fetches it
    assert not list((tmp_path / "repo").glob("*.deb"))


@pytest.mark.skipif(
    not (shutil.which("gpg") and shutil.which("gpgconf")),
    reason="gpg is not installed (Debian package gnupg): keys cannot be checked",
)
def test_a_key_by_url_must_have_the_stated_fingerprint(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"]
    subprocess.run(
        [*gpg, "--quiet", "--passphrase", "", "--quick-gen-key", "vendor", "ed25519"], check=True
    )
    listing = subprocess.run([*gpg, "--with-colons", "--list-keys"], capture_output=True, text=True)
    fingerprint = next(line.split(":")[9] for line in listing.stdout.splitlines() if "fpr" in line)
    armored = subprocess.run([*gpg, "--armor", "--export"], capture_output=True, check=True).stdout
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    (tmp_path / "vendor.asc").write_bytes(armored)

    def source(fpr: str) -> apt_repo.AptSource:
        data = {
            "uris": "https://vendor.test/repo/",
            "suites": ["/"],
            "signed_by": {"url": f"file://{tmp_path}/vendor.asc", "fingerprint": fpr},
        }
        spec = {
            "name": "x",
            "apt": [{"name": "v", "image": "i", "sources": [data], "packages": ["jq"]}],
        }
        return parse_spec(spec, {}).apt[0].sources[0]

    fetcher = Fetcher()
    with pytest.raises(AptError, match=f"holds {fingerprint}, not the expected {'A' * 40}"):
        apt_repo.source_keyring(source("A" * 40), tmp_path / "cache", tmp_path / "t", fetcher, "v")
    keyring = apt_repo.source_keyring(
        source(fingerprint), tmp_path / "cache", tmp_path / "t", fetcher, "v"
    )
    assert keyring == tmp_path / "cache" / "keys" / f"{fingerprint}.gpg"
    assert not keyring.read_bytes().startswith(b"-----BEGIN")  # binary, for apt's Signed-By
    assert fetcher.fetches == 2
    apt_repo.source_keyring(source(fingerprint), tmp_path / "cache", tmp_path / "t", fetcher, "v")
    assert fetcher.fetches == 2  # cached, checked again, not fetched again
