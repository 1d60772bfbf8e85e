"""The state the converge leaves on the host with a (simulated) GPU: NVIDIA's 535 user space
from the mirror and held, nouveau kept off, nvidia-persistenced enabled, no kernel side in a
container, and CUDA 11.8 on every login shell's PATH and in the linker's cache.

Run by verify.yml (molecule/resources/testinfra.yml); the driver-too-old failure path stays
in verify.yml, as it drives the cuda_toolkit role.
"""

from __future__ import annotations

import re

import pytest
from testinfra_helpers import (
    apt_source_urls,
    held_packages,
    installed_packages,
    unit_property,
    variables,
)

testinfra_hosts = ["ansible://gpu_sim"]

# nvidia_driver's Debian user space (roles/nvidia_driver/vars/Debian.yml).
DRIVER_PACKAGES = ["nvidia-smi", "libcuda1", "libnvidia-ml1", "nvidia-persistenced"]


def mirror_apt_url(host) -> str:
    return f"http://{variables(host)['groups']['mirror'][0]}/apt/debian12"


@pytest.mark.parametrize("name", DRIVER_PACKAGES)
def test_the_535_user_space_is_installed_and_held(host, name: str) -> None:
    package = host.package(name)
    assert package.is_installed
    assert re.fullmatch(r"535\.[0-9.]+-\S+", package.version), package.version
    assert name in held_packages(host)


@pytest.mark.parametrize("name", [*DRIVER_PACKAGES, "nvidia-cuda-toolkit"])
def test_the_mirror_is_the_only_source_of_the_gpu_packages(host, name: str) -> None:
    urls = apt_source_urls(host, name)
    assert urls
    assert all(url.startswith(mirror_apt_url(host)) for url in urls), urls


def test_the_nvidia_smi_on_the_system_path_is_debians(host) -> None:
    # Through the nvidia alternative (the test double sits in /usr/local/bin, before it on PATH).
    target = host.check_output("readlink -f /usr/bin/nvidia-smi")
    assert host.check_output("dpkg-query --search %s", target).startswith("nvidia-smi:")


def test_nouveau_is_blacklisted(host) -> None:
    conf = host.file("/etc/modprobe.d/llmfleet-blacklist-nouveau.conf")
    assert conf.is_file
    assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o644)
    lines = conf.content_string.splitlines()
    assert "blacklist nouveau" in lines
    assert "options nouveau modeset=0" in lines


def test_nvidia_persistenced_is_enabled(host) -> None:
    # Enabled for the next boot; not started in a container, which has no nvidia module.
    assert unit_property(host, "nvidia-persistenced.service", "UnitFileState") == "enabled"


def test_a_container_gets_no_kernel_side(host) -> None:
    kernel_side = [
        name
        for name in installed_packages(host)
        if name.startswith(("nvidia-kernel-", "linux-headers-")) or name == "dkms"
    ]
    assert kernel_side == []


def test_cuda_11_8_is_installed(host) -> None:
    toolkit = host.package("nvidia-cuda-toolkit")
    assert toolkit.is_installed
    assert toolkit.version.startswith("11.8."), toolkit.version


def test_a_login_shell_finds_nvcc_11_8_and_cuda_home(host) -> None:
    out = host.check_output(
        """bash -lc 'command -v nvcc && nvcc --version && echo "CUDA_HOME=$CUDA_HOME"'"""
    )
    assert "release 11.8" in out
    assert "CUDA_HOME=/usr/lib/cuda" in out.splitlines()


def test_the_cuda_runtime_is_in_the_linker_cache(host) -> None:
    assert "libcudart.so.11.0" in host.check_output("ldconfig -p")


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("/etc/profile.d/llmfleet-cuda.sh", "export CUDA_HOME=/usr/lib/cuda"),
        ("/etc/ld.so.conf.d/llmfleet-cuda.conf", "/usr/lib/x86_64-linux-gnu"),
    ],
)
def test_cuda_environment_file(host, path: str, line: str) -> None:
    f = host.file(path)
    assert f.is_file
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
    assert line in f.content_string.splitlines()
