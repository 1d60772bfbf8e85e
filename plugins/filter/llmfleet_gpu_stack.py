"""The GPU stack's decisions as pure functions: driver packages, Secure Boot, CUDA, daemon.json.

The roles nvidia_driver, cuda_toolkit and container_runtime call these filters and keep their
tasks to applying the result. Tests: tests/unit/test_gpu_stack_filters.py.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # the unit tests import this file without Ansible's plugin loader
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

DRIVER_METHODS = ("distribution", "cuda_repo")
CUDA_METHODS = ("distribution", "cuda_repo")

#: The oldest Linux driver each CUDA release runs on (NVIDIA's CUDA Toolkit release notes,
#: table 3, "CUDA Toolkit and Corresponding Driver Versions", minimum for the GA release).
CUDA_MIN_DRIVER = {
    "11.0": "450.36.06",
    "11.1": "455.23",
    "11.2": "460.27.03",
    "11.3": "465.19.01",
    "11.4": "470.42.01",
    "11.5": "495.29.05",
    "11.6": "510.39.01",
    "11.7": "515.43.04",
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
}

_BRANCH_RE = re.compile(r"^[0-9]{3}$")
_CUDA_RE = re.compile(r"^[0-9]{2}\.[0-9]$")
_NVCC_RE = re.compile(r"release ([0-9]+\.[0-9]+)")


def version_tuple(version: str) -> tuple[int, ...]:
    """'535.261.03' -> (535, 261, 3); the Debian revision and epoch are ignored."""
    text = str(version).split(":", 1)[-1]
    numbers = re.match(r"^[0-9]+(\.[0-9]+)*", text.strip())
    if not numbers:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(part) for part in numbers.group(0).split("."))


def version_at_least(version: str, minimum: str) -> bool:
    return version_tuple(version) >= version_tuple(minimum)


def driver_plan(
    distribution: str,
    method: str,
    branch: str,
    kernel: str,
    nvswitch_count: int | None = 0,
    server: bool = True,
) -> dict[str, Any]:
    """The driver's packages for a host.

    Returns ``{userspace, kernel, hold, fabricmanager, version_pattern, version_package,
    problems}``: the
    user-space packages (libraries, nvidia-smi, nvidia-persistenced), the kernel side (DKMS
    module and the running kernel's headers), the packages to hold, the fabric manager's
    package (NVSwitch hosts) or None, the apt version pattern of the branch, and the reasons
    the plan cannot be applied (empty when it can).
    """
    problems: list[str] = []
    branch = str(branch)
    if method not in DRIVER_METHODS:
        problems.append(f"nvidia_driver_method must be one of {', '.join(DRIVER_METHODS)}")
    if not _BRANCH_RE.match(branch):
        problems.append(f"nvidia_driver_branch must be a driver branch like 535, got {branch!r}")
    family = str(distribution).lower()
    if family not in ("debian", "ubuntu"):
        problems.append(f"the driver is installed on Debian or Ubuntu only, not {distribution}")
    headers = f"linux-headers-{kernel}"
    flavour = "-server" if server else ""
    fabricmanager: str | None = None
    if method == "cuda_repo":
        # NVIDIA's CUDA repository: one metapackage per branch pulls the driver and its DKMS
        # module; the fabric manager comes from the same repository, version for version.
        userspace = [f"cuda-drivers-{branch}"]
        kernel_side = [headers]
        fabricmanager = f"nvidia-fabricmanager-{branch}"
    elif family == "ubuntu":
        userspace = [
            f"libnvidia-compute-{branch}{flavour}",
            f"nvidia-utils-{branch}{flavour}",
            f"nvidia-compute-utils-{branch}{flavour}",
        ]
        kernel_side = [f"nvidia-dkms-{branch}{flavour}", headers]
        fabricmanager = f"nvidia-fabricmanager-{branch}"
    else:
        # Debian's non-free packages for a compute server: the libraries, nvidia-smi and the
        # persistence daemon, without the X.org parts the nvidia-driver metapackage brings.
        userspace = ["nvidia-smi", "libcuda1", "libnvidia-ml1", "nvidia-persistenced"]
        kernel_side = ["nvidia-kernel-dkms", headers]
    if (nvswitch_count or 0) > 0 and fabricmanager is None:
        problems.append(
            f"this host has {nvswitch_count} NVSwitch bridges and needs nvidia-fabricmanager of "
            "exactly the driver's version, which Debian does not package: set "
            "nvidia_driver_method: cuda_repo and carry NVIDIA's CUDA repository in the bundle"
        )
    return {
        "userspace": userspace,
        "kernel": kernel_side,
        "hold": [name for name in userspace + kernel_side if name != headers],
        "fabricmanager": fabricmanager if (nvswitch_count or 0) > 0 else None,
        "version_pattern": f"{branch}.*",
        # the package whose version is the driver's (the fabric manager must match it)
        "version_package": userspace[0],
        "problems": problems,
    }


def secure_boot_enabled(efivar_base64: str | None) -> bool:
    """Whether the SecureBoot EFI variable (4 attribute bytes, then the value) says 1."""
    if not efivar_base64:
        return False
    try:
        data = base64.b64decode(efivar_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AnsibleFilterError(f"the SecureBoot EFI variable is not readable: {exc}") from exc
    return len(data) >= 5 and data[4] == 1


def cuda_plan(
    version: str,
    method: str,
    distribution: str,
    driver_version: str | None,
    minimum_drivers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """CUDA: ``{packages, home, bin_dir, lib_dir, minimum_driver, problems}``.

    ``problems`` says why it cannot go on (empty when it can). Debian's CUDA keeps nvcc in
    /usr/bin and its libraries in the multiarch folder; ``home`` is /usr/lib/cuda, the
    CUDA_HOME Debian's packages lay out for build systems.
    """
    table = minimum_drivers or CUDA_MIN_DRIVER
    version = str(version)
    problems: list[str] = []
    if not _CUDA_RE.match(version):
        problems.append(f"cuda_toolkit_version must be a release like 11.8, got {version!r}")
    if method not in CUDA_METHODS:
        problems.append(f"cuda_toolkit_method must be one of {', '.join(CUDA_METHODS)}")
    minimum = table.get(version)
    if minimum is None and not problems:
        problems.append(
            f"no minimum driver known for CUDA {version} (known: {', '.join(sorted(table))})"
        )
    if not driver_version:
        problems.append("no NVIDIA driver is loaded or installed: run the nvidia_driver role first")
    elif minimum and not version_at_least(driver_version, minimum):
        problems.append(
            f"CUDA {version} needs NVIDIA driver {minimum} or newer; this host's driver is "
            f"{driver_version}: upgrade nvidia_driver_branch (and reboot) first"
        )
    if method == "cuda_repo":
        packages = [f"cuda-toolkit-{version.replace('.', '-')}"]
        home = f"/usr/local/cuda-{version}"
        bin_dir, lib_dir = f"{home}/bin", f"{home}/lib64"
    elif str(distribution).lower() == "debian":
        packages = [f"nvidia-cuda-toolkit={version}.*"]
        home, bin_dir, lib_dir = "/usr/lib/cuda", "/usr/bin", "/usr/lib/x86_64-linux-gnu"
    else:
        problems.append(
            f"{distribution} has no CUDA {version} in its own archive: set cuda_toolkit_method: "
            "cuda_repo and carry NVIDIA's CUDA repository in the bundle"
        )
        packages, home, bin_dir, lib_dir = [], "", "", ""
    return {
        "packages": packages,
        "home": home,
        "bin_dir": bin_dir,
        "lib_dir": lib_dir,
        "minimum_driver": minimum,
        "problems": problems,
    }


def nvcc_release(output: str) -> str | None:
    """'Cuda compilation tools, release 11.8, V11.8.89' -> '11.8'."""
    match = _NVCC_RE.search(output or "")
    return match.group(1) if match else None


def docker_daemon_config(
    data_root: str,
    log_max_size: str,
    log_max_file: int,
    live_restore: bool,
    nvidia: bool,
    nvidia_runtime_path: str,
    nvidia_default: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """daemon.json: the role's settings, the NVIDIA runtime on GPU hosts, then `extra` on top."""
    config: dict[str, Any] = {
        "data-root": data_root,
        "log-driver": "json-file",
        "log-opts": {"max-size": str(log_max_size), "max-file": str(log_max_file)},
        "live-restore": bool(live_restore),
    }
    if nvidia:
        config["runtimes"] = {"nvidia": {"path": nvidia_runtime_path, "runtimeArgs": []}}
        if nvidia_default:
            config["default-runtime"] = "nvidia"
    elif nvidia_default:
        raise AnsibleFilterError(
            "container_runtime_nvidia_default is true on a host without the NVIDIA runtime"
        )
    for key, value in (extra or {}).items():
        config[key] = value
    return config


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "llmfleet_driver_plan": driver_plan,
            "llmfleet_secure_boot_enabled": secure_boot_enabled,
            "llmfleet_cuda_plan": cuda_plan,
            "llmfleet_nvcc_release": nvcc_release,
            "llmfleet_version_at_least": version_at_least,
            "llmfleet_docker_daemon_config": docker_daemon_config,
        }
