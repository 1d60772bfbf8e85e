"""The preflight changes nothing on a host: after the converge (and its idempotence and check
runs) no llmfleet folder, apt source, package, unit, user or local fact is there. And the
test material the prepare step put there, which the facts verify.yml checks rest on: the
nvidia-smi double exactly on the hosts with a capture.

Run by verify.yml (molecule/resources/testinfra.yml); the facts and tier decisions are
behaviour, checked by the plays of verify.yml.
"""

from __future__ import annotations

import pytest
from testinfra_helpers import (
    apt_sources,
    assert_nvidia_smi_double,
    held_packages,
    installed_packages,
)

testinfra_hosts = ["ansible://all"]

# What the later stages of site.yml create: none of it may come from the preflight.
LLMFLEET_PATHS = [
    "/etc/llmfleet",
    "/opt/llmfleet",
    "/data/models",
    "/var/log/llmfleet",
    "/var/cache/llmfleet",
    "/etc/apt/keyrings/llmfleet-bundle.gpg",
    "/etc/apt/sources.disabled-by-llmfleet",
    "/etc/modprobe.d/llmfleet-blacklist-nouveau.conf",
    "/etc/profile.d/llmfleet-cuda.sh",
    "/etc/ld.so.conf.d/llmfleet-cuda.conf",
    "/etc/docker/daemon.json",
]
# The packages the roles install (their defaults and vars/<OS>.yml).
ROLE_PACKAGES = {
    "docker.io",
    "nvidia-container-toolkit",
    "nvidia-smi",
    "libcuda1",
    "libnvidia-ml1",
    "nvidia-persistenced",
    "nvidia-kernel-dkms",
    "nvidia-cuda-toolkit",
    "caddy",
    "nginx",
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-node-exporter",
    "mtail",
    "build-essential",
    "cmake",
    "ccache",
}


@pytest.mark.parametrize("path", LLMFLEET_PATHS)
def test_the_preflight_created_nothing(host, path: str) -> None:
    assert not host.file(path).exists


def test_no_local_fact_is_written(host) -> None:
    facts = host.file("/etc/ansible/facts.d")
    assert not facts.exists or facts.listdir() == []


def test_the_apt_sources_are_the_images_own(host) -> None:
    # debootstrap writes /etc/apt/sources.list, and nothing else, into the test image.
    assert apt_sources(host) == ["/etc/apt/sources.list"]
    assert "llmfleet" not in host.file("/etc/apt/sources.list").content_string


def test_no_package_is_installed_or_held(host) -> None:
    installed = installed_packages(host)
    assert sorted(ROLE_PACKAGES & installed.keys()) == []
    assert [name for name in installed if "llmfleet" in name] == []
    assert held_packages(host) == set()


def test_no_llmfleet_unit_or_user(host) -> None:
    # systemctl exits 1 when no unit file matches.
    units = host.run_expect([0, 1], "systemctl list-unit-files --no-legend %s", "llmfleet*")
    assert units.stdout.strip() == ""
    found = "find /etc/systemd/system /usr/lib/systemd/system -name %s"
    assert host.check_output(found, "llmfleet*") == ""
    assert not host.user("llmfleet").exists
    assert not host.user("llmfleet-receiver").exists


def test_the_nvidia_smi_double_is_exactly_on_the_hosts_with_a_capture(host) -> None:
    assert_nvidia_smi_double(host)
    if not host.ansible.get_variables().get("test_capture"):
        # Like a host with no driver: no nvidia-smi at all.
        assert not host.exists("nvidia-smi")
