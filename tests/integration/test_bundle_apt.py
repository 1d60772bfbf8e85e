"""`llmfleet bundle build` with an apt section, for real: apt resolves `jq` inside a container.

Needs Docker, the Debian 12 test image and the Debian mirror (LLMFLEET_DEBIAN_MIRROR, else the
first `URIs:` of /etc/apt/sources.list.d/debian.sources); skips when one is missing. It builds a
bundle for jq, checks that Packages holds jq and every package it depends on (the closure for
a bare host), verifies the bundle, installs jq from it in a fresh container that trusts only the
bundle key, and rebuilds to prove nothing is fetched again.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from helpers import debian_apt_entry

from llmfleet.bundle.apt_repo import parse_control
from llmfleet.bundle.build import build_bundle
from llmfleet.bundle.fetch import Fetcher
from llmfleet.bundle.spec import parse_spec
from llmfleet.bundle.verify import verify_bundle

IMAGE = os.environ.get("LLMFLEET_TEST_IMAGE", "llmfleet/debian12-systemd:latest")
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")


def docker_works() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False


def debian_mirror() -> str | None:
    if os.environ.get("LLMFLEET_DEBIAN_MIRROR"):
        return os.environ["LLMFLEET_DEBIAN_MIRROR"]
    if SOURCES.is_file():
        found = re.search(r"^URIs:\s*(\S+)", SOURCES.read_text(), re.MULTILINE)
        return found.group(1) if found else None
    return None


pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not docker_works(), reason="docker info fails: no Docker engine here"),
]


def dependencies(stanza: dict[str, str]) -> list[list[str]]:
    """Depends and Pre-Depends as lists of alternatives (package names only)."""
    groups = []
    for field in ("Pre-Depends", "Depends"):
        for group in filter(None, (g.strip() for g in stanza.get(field, "").split(","))):
            groups.append([re.split(r"[\s(:]", alt.strip())[0] for alt in group.split("|")])
    return groups


def test_a_bundle_for_jq_is_complete_signed_and_installable(tmp_path: Path) -> None:
    mirror = debian_mirror()
    if mirror is None:
        pytest.skip("no Debian mirror: set LLMFLEET_DEBIAN_MIRROR")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        pytest.skip(f"the image {IMAGE} is not here: scripts/dev.sh test builds it")
    # essential: False keeps the download small; the CI spec bundles them
    data = {"name": "integration", "apt": [debian_apt_entry(IMAGE, ["jq"], essential=False)]}
    spec = parse_spec(data, {"LLMFLEET_DEBIAN_MIRROR": mirror}, "integration.yml")
    bundle, home = tmp_path / "bundle", tmp_path / "signing"
    first = build_bundle(spec, bundle, signing_home=home, quiet=True)

    stanzas = parse_control((bundle / "apt/debian12/Packages").read_text())
    listed = {stanza["Package"] for stanza in stanzas}
    assert {"jq", "libjq1", "libonig5", "libc6"} <= listed  # libc6: the status was empty
    for stanza in stanzas:
        for alternatives in dependencies(stanza):
            assert set(alternatives) & listed, f"{stanza['Package']} needs one of {alternatives}"
    assert {d["package"] for d in first.manifest["apt"]["debian12"]["debs"]} == listed
    problems, summary = verify_bundle(bundle)
    assert problems == [] and summary is not None

    script = (
        "set -e; rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*; "
        "printf 'Types: deb\\nURIs: file:///bundle/apt/debian12/\\nSuites: ./\\n"
        "Signed-By: /bundle/keys/llmfleet-bundle.gpg\\n' >/etc/apt/sources.list.d/b.sources; "
        "apt-get -qq update; DEBIAN_FRONTEND=noninteractive apt-get -qq install -y jq >/dev/null; "
        "jq --version"
    )
    installed = subprocess.run(
        [
            *("docker", "run", "--rm", "--network", "none", "-v", f"{bundle}:/bundle:ro"),
            *("--entrypoint", "/bin/sh", IMAGE, "-c", script),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert installed.stdout.strip().startswith("jq-1.")

    fetcher = Fetcher()
    second = build_bundle(spec, bundle, signing_home=home, quiet=True, fetcher=fetcher)
    assert not second.changed and fetcher.fetches == 0
    assert second.manifest == first.manifest
