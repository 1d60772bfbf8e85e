"""The GPU stack's pure decisions: driver packages, Secure Boot, CUDA plan, daemon.json."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "llmfleet_gpu_stack.py"
spec = importlib.util.spec_from_file_location("llmfleet_gpu_stack_filters", PLUGIN)
assert spec and spec.loader
stack = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stack)

KERNEL = "6.1.0-28-amd64"


def test_debian_distribution_driver_is_the_compute_user_space_plus_dkms() -> None:
    plan = stack.driver_plan("Debian", "distribution", "535", KERNEL)
    assert plan["userspace"] == ["nvidia-smi", "libcuda1", "libnvidia-ml1", "nvidia-persistenced"]
    assert plan["kernel"] == ["nvidia-kernel-dkms", f"linux-headers-{KERNEL}"]
    assert "nvidia-kernel-dkms" in plan["hold"]
    assert f"linux-headers-{KERNEL}" not in plan["hold"]
    assert plan["version_pattern"] == "535.*"
    assert plan["fabricmanager"] is None
    assert plan["problems"] == []


def test_ubuntu_server_branch_and_fabric_manager_on_nvswitch_hosts() -> None:
    plan = stack.driver_plan("Ubuntu", "distribution", 535, KERNEL, nvswitch_count=4)
    assert plan["userspace"][0] == "libnvidia-compute-535-server"
    assert "nvidia-dkms-535-server" in plan["kernel"]
    assert plan["fabricmanager"] == "nvidia-fabricmanager-535"
    desktop = stack.driver_plan("Ubuntu", "distribution", "550", KERNEL, server=False)
    assert desktop["userspace"][1] == "nvidia-utils-550"
    assert desktop["fabricmanager"] is None


def test_cuda_repository_method() -> None:
    plan = stack.driver_plan("Debian", "cuda_repo", "535", KERNEL, nvswitch_count=6)
    assert plan["userspace"] == ["cuda-drivers-535"]
    assert plan["fabricmanager"] == "nvidia-fabricmanager-535"
    assert plan["problems"] == []


def test_nvswitch_on_debian_packages_says_what_to_do() -> None:
    plan = stack.driver_plan("Debian", "distribution", "535", KERNEL, nvswitch_count=6)
    assert len(plan["problems"]) == 1
    assert "nvidia_driver_method: cuda_repo" in plan["problems"][0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("Debian", "runfile", "535"), "nvidia_driver_method must be one of distribution"),
        (("Debian", "distribution", "latest"), "nvidia_driver_branch must be a driver branch"),
        (("RedHat", "distribution", "535"), "Debian or Ubuntu only, not RedHat"),
    ],
)
def test_bad_driver_settings_are_named(args: tuple[str, str, str], fragment: str) -> None:
    problems = stack.driver_plan(*args, KERNEL)["problems"]
    assert any(fragment in problem for problem in problems), problems


def efivar(value: int) -> str:
    return base64.b64encode(bytes([0x06, 0, 0, 0, value])).decode()


def test_secure_boot_reads_the_value_after_the_attributes() -> None:
    assert stack.secure_boot_enabled(efivar(1)) is True
    assert stack.secure_boot_enabled(efivar(0)) is False
    assert stack.secure_boot_enabled("") is False
    assert stack.secure_boot_enabled(None) is False
    with pytest.raises(stack.AnsibleFilterError, match="SecureBoot EFI variable"):
        stack.secure_boot_enabled("not base64!")


@pytest.mark.parametrize(
    ("version", "minimum", "expected"),
    [
        ("535.261.03", "520.61.05", True),
        ("520.61.05", "520.61.05", True),
        ("515.105.01", "520.61.05", False),
        ("1:535.104.05-1~deb12u1", "520.61.05", True),
        ("470.82.01", "520.61.05", False),
    ],
)
def test_version_at_least(version: str, minimum: str, expected: bool) -> None:
    assert stack.version_at_least(version, minimum) is expected


def test_cuda_11_8_on_debian() -> None:
    plan = stack.cuda_plan("11.8", "distribution", "Debian", "535.104.05")
    assert plan == {
        "packages": ["nvidia-cuda-toolkit=11.8.*"],
        "home": "/usr/lib/cuda",
        "bin_dir": "/usr/bin",
        "lib_dir": "/usr/lib/x86_64-linux-gnu",
        "minimum_driver": "520.61.05",
        "problems": [],
    }
    nvidia = stack.cuda_plan("11.8", "cuda_repo", "Ubuntu", "535.104.05")
    assert nvidia["packages"] == ["cuda-toolkit-11-8"]
    assert nvidia["home"] == "/usr/local/cuda-11.8"
    assert nvidia["bin_dir"] == "/usr/local/cuda-11.8/bin"
    assert nvidia["lib_dir"] == "/usr/local/cuda-11.8/lib64"


def test_cuda_fails_early_on_an_old_driver_naming_both_versions() -> None:
    problems = stack.cuda_plan("11.8", "distribution", "Debian", "470.82.01")["problems"]
    assert problems == [
        "CUDA 11.8 needs NVIDIA driver 520.61.05 or newer; this host's driver is 470.82.01: "
        "upgrade nvidia_driver_branch (and reboot) first"
    ]


def test_cuda_without_driver_or_with_unknown_release() -> None:
    assert (
        "run the nvidia_driver role first"
        in stack.cuda_plan("11.8", "distribution", "Debian", None)["problems"][0]
    )
    assert (
        "no minimum driver known for CUDA 13.9"
        in stack.cuda_plan("13.9", "distribution", "Debian", "580.1")["problems"][0]
    )
    assert "cuda_repo" in stack.cuda_plan("11.8", "distribution", "Ubuntu", "535.1")["problems"][0]


def test_nvcc_release() -> None:
    output = (
        "nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2022 NVIDIA Corporation\n"
        "Built on Wed_Sep_21_10:33:58_PDT_2022\nCuda compilation tools, release 11.8, V11.8.89\n"
    )
    assert stack.nvcc_release(output) == "11.8"
    assert stack.nvcc_release("command not found") is None


def test_daemon_json_with_the_nvidia_runtime_and_site_options_last() -> None:
    config = stack.docker_daemon_config(
        "/srv/docker",
        "100m",
        5,
        True,
        True,
        "/usr/bin/nvidia-container-runtime",
        True,
        {"storage-driver": "overlay2", "live-restore": False},
    )
    assert config == {
        "data-root": "/srv/docker",
        "log-driver": "json-file",
        "log-opts": {"max-size": "100m", "max-file": "5"},
        "live-restore": False,
        "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": []}},
        "default-runtime": "nvidia",
        "storage-driver": "overlay2",
    }
    plain = stack.docker_daemon_config("/var/lib/docker", "10m", 3, True, False, "", False)
    assert "runtimes" not in plain
    with pytest.raises(stack.AnsibleFilterError, match="without the NVIDIA runtime"):
        stack.docker_daemon_config("/var/lib/docker", "10m", 3, True, False, "", True)
