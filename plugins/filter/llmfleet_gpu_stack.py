"""The GPU stack's decisions as pure functions: driver packages, Secure Boot, CUDA, versions.

The OS data (package names per distribution and method, CUDA's folders, the minimum driver of
each CUDA release) lives in the roles' ``vars/`` files; these functions combine it with the
settings and the facts. The roles nvidia_driver and cuda_toolkit call them and keep their tasks
to applying the result. Tests: tests/unit/test_gpu_stack_filters.py.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # the unit tests import this file without Ansible's plugin loader
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

DRIVER_METHODS = ("distribution", "cuda_repo")
CUDA_METHODS = ("distribution", "cuda_repo")

_BRANCH_RE = re.compile(r"^[0-9]{3}$")
_CUDA_RE = re.compile(r"^[0-9]{2}\.[0-9]$")
_NVCC_RE = re.compile(r"release ([0-9]+\.[0-9]+)")
_UPSTREAM_RE = re.compile(r"^[0-9]+(\.[0-9]+)*")


def fill(template: str, **fields: str) -> str:
    """'cuda-drivers-{branch}' with branch='535' -> 'cuda-drivers-535' (the vars files' names)."""
    try:
        return str(template).format_map(fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise AnsibleFilterError(
            f"{template!r} in the role's vars/ names an unknown placeholder {exc}; "
            f"known: {', '.join('{' + name + '}' for name in sorted(fields))}"
        ) from exc


def driver_version(text: str | None) -> str:
    """The upstream part of a driver version: '1:535.104.05-1~deb12u1' -> '535.104.05'.

    Empty when there is none ('', 'N/A'), so that a task can say "no driver" instead of
    comparing something that is not a version.
    """
    upstream = str(text or "").strip().split(":", 1)[-1]
    match = _UPSTREAM_RE.match(upstream)
    return match.group(0) if match else ""


def driver_plan(
    distribution: str,
    method: str,
    branch: str,
    kernel: str,
    nvswitch_count: int | None = 0,
    server: bool = True,
    *,
    packages: Mapping[str, Any] | None = None,
    cuda_repo_packages: Mapping[str, Any] | None = None,
    headers: str | None = None,
    server_suffix: str = "",
) -> dict[str, Any]:
    """The driver's packages for a host, from the OS data of roles/nvidia_driver/vars/.

    ``packages`` (the distribution's own, from ``vars/<OS>.yml``) and ``cuda_repo_packages``
    (NVIDIA's CUDA repository, ``vars/main.yml``) each hold ``{userspace, kernel,
    fabricmanager}``, names with the placeholders ``{branch}`` and ``{suffix}``
    (``server_suffix`` when ``server``); ``headers`` is the running kernel's headers package,
    with ``{kernel}``. ``packages`` and ``headers`` are None on an OS the role has no data for.

    Returns ``{userspace, kernel, hold, fabricmanager, version_pattern, version_package,
    problems}``: the user-space packages (libraries, nvidia-smi, nvidia-persistenced), the kernel
    side (DKMS module and the running kernel's headers), the packages to hold, the fabric
    manager's package (NVSwitch hosts) or None, the apt version pattern of the branch, the
    package whose version is the driver's, and the reasons the plan cannot be applied (empty
    when it can).
    """
    problems: list[str] = []
    branch = str(branch)
    if method not in DRIVER_METHODS:
        problems.append(f"nvidia_driver_method must be one of {', '.join(DRIVER_METHODS)}")
    if not _BRANCH_RE.match(branch):
        problems.append(f"nvidia_driver_branch must be a driver branch like 535, got {branch!r}")
    if packages is None or headers is None:
        problems.append(
            f"no driver packages are known for {distribution}: "
            f"roles/nvidia_driver/vars/ has no file for it"
        )
    source = (cuda_repo_packages if method == "cuda_repo" else packages) or {}
    fields = {"branch": branch, "suffix": server_suffix if server else "", "kernel": str(kernel)}
    userspace = [fill(name, **fields) for name in source.get("userspace") or []]
    headers_package = fill(headers, **fields) if headers else None
    kernel_side = [fill(name, **fields) for name in source.get("kernel") or []]
    kernel_side += [headers_package] if headers_package else []
    fabricmanager = fill(source["fabricmanager"], **fields) if source.get("fabricmanager") else None
    if (nvswitch_count or 0) > 0 and fabricmanager is None:
        problems.append(
            f"this host has {nvswitch_count} NVSwitch bridges and needs nvidia-fabricmanager of "
            f"exactly the driver's version, which {distribution} does not package: set "
            "nvidia_driver_method: cuda_repo and carry NVIDIA's CUDA repository in the bundle"
        )
    return {
        "userspace": userspace,
        "kernel": kernel_side,
        "hold": [name for name in userspace + kernel_side if name != headers_package],
        "fabricmanager": fabricmanager if (nvswitch_count or 0) > 0 else None,
        "version_pattern": f"{branch}.*",
        # the package whose version is the driver's (the fabric manager must match it)
        "version_package": userspace[0] if userspace else "",
        "problems": problems,
    }


def secure_boot_enabled(efivar_base64: str | None) -> bool:
    """Whether the SecureBoot EFI variable (4 attribute bytes, then the value) says 1.

    No variable at all (None or empty: the firmware has none) is off. A variable that was
    read but cannot be decoded, or is shorter than 5 bytes, is unknown, and unknown is not
    off: that raises, naming what was found.
    """
    if not efivar_base64:
        return False
    try:
        data = base64.b64decode(efivar_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AnsibleFilterError(f"the SecureBoot EFI variable is not readable: {exc}") from exc
    if len(data) < 5:
        raise AnsibleFilterError(
            f"the SecureBoot EFI variable holds {len(data)} bytes, not 4 attribute bytes and "
            "a value: the Secure Boot state is unknown, and unknown is not off"
        )
    if data[4] not in (0, 1):
        raise AnsibleFilterError(
            f"the SecureBoot EFI variable's value is {data[4]}, neither 0 nor 1: "
            "the Secure Boot state is unknown, and unknown is not off"
        )
    return data[4] == 1


def cuda_plan(
    version: str,
    method: str,
    distribution: str,
    *,
    distribution_cuda: Mapping[str, Any] | None = None,
    cuda_repo: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """CUDA's packages, folders and host compiler:
    ``{packages, home, bin_dir, lib_dir, host_compiler, problems}``.

    ``distribution_cuda`` (the OS archive's CUDA, from roles/cuda_toolkit/vars/<OS>.yml; empty
    or None where the archive has none) and ``cuda_repo`` (NVIDIA's CUDA repository,
    vars/main.yml) each hold ``{packages, home, bin_dir, lib_dir}`` (and ``host_compiler``:
    the g++ nvcc must use, empty for nvcc's own choice) with the placeholders
    ``{version}``, ``{major}`` and ``{minor}``. ``problems`` says why it cannot go on (empty
    when it can). The driver is checked against the release by the role's tasks.
    """
    version = str(version)
    problems: list[str] = []
    if not _CUDA_RE.match(version):
        problems.append(f"cuda_toolkit_version must be a release like 11.8, got {version!r}")
    if method not in CUDA_METHODS:
        problems.append(f"cuda_toolkit_method must be one of {', '.join(CUDA_METHODS)}")
    source = (cuda_repo if method == "cuda_repo" else distribution_cuda) or {}
    if method == "distribution" and not source:
        problems.append(
            f"{distribution} has no CUDA {version} in its own archive: set cuda_toolkit_method: "
            "cuda_repo and carry NVIDIA's CUDA repository in the bundle"
        )
    major, _, minor = version.partition(".")
    fields = {"version": version, "major": major, "minor": minor}
    return {
        "packages": [fill(name, **fields) for name in source.get("packages") or []],
        "home": fill(source.get("home") or "", **fields),
        "bin_dir": fill(source.get("bin_dir") or "", **fields),
        "lib_dir": fill(source.get("lib_dir") or "", **fields),
        "host_compiler": fill(source.get("host_compiler") or "", **fields),
        "problems": problems,
    }


def nvcc_release(output: str) -> str | None:
    """'Cuda compilation tools, release 11.8, V11.8.89' -> '11.8'."""
    match = _NVCC_RE.search(output or "")
    return match.group(1) if match else None


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "llmfleet_driver_plan": driver_plan,
            "llmfleet_driver_version": driver_version,
            "llmfleet_secure_boot_enabled": secure_boot_enabled,
            "llmfleet_cuda_plan": cuda_plan,
            "llmfleet_nvcc_release": nvcc_release,
        }
