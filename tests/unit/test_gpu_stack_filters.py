"""The GPU stack: its OS data (the roles' vars/), the decisions that combine it, the checks.

The package names, CUDA's folders and the minimum-driver table are data in
roles/{nvidia_driver,cuda_toolkit}/vars/; the filters in plugins/filter/llmfleet_gpu_stack.py
combine them with the settings. The driver check and daemon.json are the roles' own task and
template, rendered here with Ansible's templar, as the roles render them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.plugins.test.core import version_compare
from ansible.template import trust_as_template
from helpers import load_module_file, role_templar

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
PLUGIN = REPO / "plugins" / "filter" / "llmfleet_gpu_stack.py"
stack = load_module_file("llmfleet_gpu_stack_filters", PLUGIN)

KERNEL = "6.1.0-28-amd64"
# The OS each test host reports: (distribution, llmfleet_os_release, os_family).
OS = {
    "Debian": ("Debian", "Debian-12", "Debian"),
    "Ubuntu": ("Ubuntu", "Ubuntu-22.04", "Debian"),
    "RedHat": ("RedHat", "RedHat-9", "RedHat"),
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def os_vars(role: str, distribution: str) -> dict[str, Any]:
    """What tasks/main.yml loads: vars/main.yml, then the first of the OS files that exists."""
    folder = ROLES / role / "vars"
    data = dict(load_yaml(folder / "main.yml"))
    name, release, family = OS[distribution]
    for candidate in (f"{release}.yml", f"{name}.yml", f"{family}.yml"):
        if (folder / candidate).is_file():
            data.update(load_yaml(folder / candidate))
            break
    return data


def driver(
    distribution: str,
    method: str,
    branch: str | int,
    nvswitch_count: int = 0,
    server: bool = True,
) -> dict[str, Any]:
    """The driver plan as roles/nvidia_driver/tasks/plan.yml asks for it."""
    data = os_vars("nvidia_driver", distribution)
    return stack.driver_plan(
        distribution,
        method,
        str(branch),
        KERNEL,
        nvswitch_count,
        server,
        packages=data.get("__nvidia_driver_packages"),
        cuda_repo_packages=data["__nvidia_driver_cuda_repo_packages"],
        headers=data.get("__nvidia_driver_kernel_headers"),
        server_suffix=data.get("__nvidia_driver_server_suffix", ""),
    )


def cuda(version: str, method: str, distribution: str) -> dict[str, Any]:
    """The CUDA plan as roles/cuda_toolkit/tasks/plan.yml asks for it."""
    data = os_vars("cuda_toolkit", distribution)
    return stack.cuda_plan(
        version,
        method,
        distribution,
        distribution_cuda=data.get("__cuda_toolkit_distribution"),
        cuda_repo=data["__cuda_toolkit_cuda_repo"],
    )


def task(path: Path, name: str) -> dict[str, Any]:
    """A task of a task file by name, with the vars of the block it sits in."""

    def walk(tasks: list[dict[str, Any]], inherited: dict[str, Any]) -> dict[str, Any] | None:
        for item in tasks:
            scope = {**inherited, **item.get("vars", {})}
            if item.get("name") == name:
                return {**item, "vars": scope}
            found = walk(item.get("block", []), scope)
            if found:
                return found
        return None

    found = walk(load_yaml(path), {})
    assert found, f"{path.relative_to(REPO)} has no task {name!r}"
    return found


# --------------------------------------------------------------------------- the OS data


ROLES_WITH_OS_DATA = ["nvidia_driver", "cuda_toolkit"]


@pytest.mark.parametrize("role", ROLES_WITH_OS_DATA)
def test_every_os_file_defines_the_same_keys(role: str) -> None:
    folder = ROLES / role / "vars"
    os_files = sorted(path for path in folder.glob("*.yml") if path.name != "main.yml")
    assert len(os_files) >= 2, os_files
    keys = {path.name: set(load_yaml(path)) for path in os_files}
    union = set().union(*keys.values())
    missing = {name: sorted(union - found) for name, found in keys.items() if union - found}
    assert not missing, f"{role}: OS files missing keys: {missing}"
    main = set(load_yaml(folder / "main.yml"))
    assert not union & main, f"{role}: vars/main.yml and the OS files both define {union & main}"
    unprefixed = sorted(key for key in union | main if not key.startswith(f"__{role}_"))
    assert not unprefixed, f"{role}: vars/ names without the __{role}_ prefix: {unprefixed}"


def test_the_minimum_driver_table_is_keyed_by_release_strings() -> None:
    table = load_yaml(ROLES / "cuda_toolkit" / "vars" / "main.yml")["__cuda_toolkit_min_driver"]
    assert table["11.8"] == "520.61.05"
    assert table["11.0"] == "450.36.06"  # unquoted, YAML would read the key as the float 11.0
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in table.items())


def test_an_unknown_placeholder_in_the_data_is_named() -> None:
    assert stack.fill("cuda-drivers-{branch}", branch="535") == "cuda-drivers-535"
    with pytest.raises(stack.AnsibleFilterError, match=r"unknown placeholder 'brnach'"):
        stack.fill("cuda-drivers-{brnach}", branch="535")


# --------------------------------------------------------------------------- the driver


def test_debian_distribution_driver_is_the_compute_user_space_plus_dkms() -> None:
    plan = driver("Debian", "distribution", "535")
    assert plan["userspace"] == ["nvidia-smi", "libcuda1", "libnvidia-ml1", "nvidia-persistenced"]
    assert plan["kernel"] == ["nvidia-kernel-dkms", f"linux-headers-{KERNEL}"]
    assert "nvidia-kernel-dkms" in plan["hold"]
    assert f"linux-headers-{KERNEL}" not in plan["hold"]
    assert plan["version_pattern"] == "535.*"
    assert plan["version_package"] == "nvidia-smi"
    assert plan["fabricmanager"] is None
    assert plan["problems"] == []


def test_ubuntu_server_branch_and_fabric_manager_on_nvswitch_hosts() -> None:
    plan = driver("Ubuntu", "distribution", 535, nvswitch_count=4)
    assert plan["userspace"] == [
        "libnvidia-compute-535-server",
        "nvidia-utils-535-server",
        "nvidia-compute-utils-535-server",
    ]
    assert plan["kernel"] == ["nvidia-dkms-535-server", f"linux-headers-{KERNEL}"]
    assert plan["fabricmanager"] == "nvidia-fabricmanager-535"
    assert plan["problems"] == []
    desktop = driver("Ubuntu", "distribution", "550", server=False)
    assert desktop["userspace"][1] == "nvidia-utils-550"
    assert desktop["fabricmanager"] is None


@pytest.mark.parametrize("distribution", ["Debian", "Ubuntu"])
def test_cuda_repository_method(distribution: str) -> None:
    plan = driver(distribution, "cuda_repo", "535", nvswitch_count=6)
    assert plan["userspace"] == ["cuda-drivers-535"]
    assert plan["kernel"] == [f"linux-headers-{KERNEL}"]
    assert plan["hold"] == ["cuda-drivers-535"]
    assert plan["fabricmanager"] == "nvidia-fabricmanager-535"
    assert plan["problems"] == []


def test_nvswitch_on_debian_packages_says_what_to_do() -> None:
    plan = driver("Debian", "distribution", "535", nvswitch_count=6)
    assert len(plan["problems"]) == 1
    assert "which Debian does not package" in plan["problems"][0]
    assert "nvidia_driver_method: cuda_repo" in plan["problems"][0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("Debian", "runfile", "535"), "nvidia_driver_method must be one of distribution"),
        (("Debian", "distribution", "latest"), "nvidia_driver_branch must be a driver branch"),
        (("RedHat", "distribution", "535"), "no driver packages are known for RedHat"),
        (("RedHat", "cuda_repo", "535"), "no driver packages are known for RedHat"),
    ],
)
def test_bad_driver_settings_are_named(args: tuple[str, str, str], fragment: str) -> None:
    problems = driver(*args)["problems"]
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
    ("raw", "says"),
    [
        (bytes([0x06, 0, 0, 0]), "holds 4 bytes"),  # attributes only: truncated read
        (bytes([0x06]), "holds 1 bytes"),
        (bytes([0x06, 0, 0, 0, 7]), "value is 7"),
    ],
)
def test_an_unreadable_secure_boot_state_is_unknown_not_off(raw: bytes, says: str) -> None:
    with pytest.raises(stack.AnsibleFilterError, match="unknown is not off") as error:
        stack.secure_boot_enabled(base64.b64encode(raw).decode())
    assert says in str(error.value)


# --------------------------------------------------------------------------- CUDA and the driver


@pytest.mark.parametrize(
    ("text", "upstream"),
    [
        ("535.261.03", "535.261.03"),
        ("1:535.104.05-1~deb12u1", "535.104.05"),
        (" 535.104.05\n", "535.104.05"),
        ("", ""),
        (None, ""),
        ("N/A", ""),
    ],
)
def test_driver_version_is_the_upstream_version(text: str | None, upstream: str) -> None:
    assert stack.driver_version(text) == upstream


@pytest.mark.parametrize(
    ("version", "minimum", "expected"),
    [
        ("535.261.03", "520.61.05", True),
        ("520.61.05", "520.61.05", True),
        ("515.105.01", "520.61.05", False),
        ("1:535.104.05-1~deb12u1", "520.61.05", True),
        ("470.82.01", "520.61.05", False),
        ("535.54.03", "535.54.03", True),
        ("535.54.2", "535.54.03", False),
    ],
)
def test_driver_against_the_minimum_with_ansibles_version_test(
    version: str, minimum: str, expected: bool
) -> None:
    # the comparison of tasks/plan.yml: `driver | llmfleet_driver_version is version(min, '>=')`
    assert version_compare(stack.driver_version(version), minimum, ">=") is expected


def test_cuda_11_8_on_debian() -> None:
    assert cuda("11.8", "distribution", "Debian") == {
        "packages": ["nvidia-cuda-toolkit=11.8.*"],
        "home": "/usr/lib/cuda",
        "bin_dir": "/usr/bin",
        "lib_dir": "/usr/lib/x86_64-linux-gnu",
        # Debian's g++ wrapper (g++-11): nvcc 11.8 refuses Debian 12's g++ 12
        "host_compiler": "/usr/lib/nvidia-cuda-toolkit/bin/g++",
        "problems": [],
    }
    nvidia = cuda("11.8", "cuda_repo", "Ubuntu")
    assert nvidia["packages"] == ["cuda-toolkit-11-8"]
    assert nvidia["home"] == "/usr/local/cuda-11.8"
    assert nvidia["bin_dir"] == "/usr/local/cuda-11.8/bin"
    assert nvidia["lib_dir"] == "/usr/local/cuda-11.8/lib64"
    assert nvidia["host_compiler"] == ""  # nvcc's own choice
    assert nvidia["problems"] == []


def test_the_method_follows_the_os_unless_set() -> None:
    assert os_vars("cuda_toolkit", "Debian")["__cuda_toolkit_method"] == "distribution"
    assert os_vars("cuda_toolkit", "Ubuntu")["__cuda_toolkit_method"] == "cuda_repo"
    default = load_yaml(ROLES / "cuda_toolkit" / "defaults" / "main.yml")["cuda_toolkit_method"]
    expected = {"Debian": "distribution", "Ubuntu": "cuda_repo", "RedHat": "cuda_repo"}
    for distribution, method in expected.items():
        render = role_templar(os_vars("cuda_toolkit", distribution))
        assert render.template(trust_as_template(default)) == method, distribution


def test_cuda_from_an_archive_without_it_says_what_to_do() -> None:
    problems = cuda("11.8", "distribution", "Ubuntu")["problems"]
    assert problems == [
        "Ubuntu has no CUDA 11.8 in its own archive: set cuda_toolkit_method: cuda_repo and "
        "carry NVIDIA's CUDA repository in the bundle"
    ]
    assert cuda("11", "cuda_repo", "Debian")["problems"] == [
        "cuda_toolkit_version must be a release like 11.8, got '11'"
    ]
    assert "cuda_toolkit_method must be one of" in cuda("11.8", "runfile", "Debian")["problems"][0]


PLAN = ROLES / "cuda_toolkit" / "tasks" / "plan.yml"


def driver_check(name: str, driver_version: str, version: str = "11.8") -> tuple[bool, str]:
    """Whether the assert `name` of cuda_toolkit's plan.yml passes, and its failure message."""
    check = task(PLAN, name)
    variables = {
        **load_yaml(ROLES / "cuda_toolkit" / "vars" / "main.yml"),
        **check["vars"],
        "inventory_hostname": "gs-gpu",
        "cuda_toolkit_version": version,
        "cuda_toolkit_driver_version": driver_version,
    }
    render = role_templar(variables)
    passed = render.evaluate_conditional(trust_as_template(check["ansible.builtin.assert"]["that"]))
    message = render.template(trust_as_template(check["ansible.builtin.assert"]["fail_msg"]))
    return passed, message


def test_cuda_fails_early_on_an_old_driver_naming_the_host_and_both_versions() -> None:
    name = "Check that the driver runs CUDA {{ cuda_toolkit_version }}"
    passed, message = driver_check(name, "470.82.01")
    assert not passed
    assert message == (
        "gs-gpu: CUDA 11.8 needs NVIDIA driver 520.61.05 or newer; "
        "this host's driver is 470.82.01: upgrade nvidia_driver_branch (and reboot) first"
    )
    assert driver_check(name, "535.104.05")[0]
    assert driver_check(name, "1:520.61.05-1~deb12u1")[0]


def test_cuda_without_driver_or_with_unknown_release() -> None:
    passed, message = driver_check("Check that a driver is loaded or installed", "")
    assert not passed
    assert message.startswith("gs-gpu: no NVIDIA driver is loaded or installed")
    assert "run the nvidia_driver role first" in message
    assert driver_check("Check that a driver is loaded or installed", "535.104.05")[0]
    name = "Check that the minimum driver is known for CUDA {{ cuda_toolkit_version }}"
    passed, message = driver_check(name, "580.1", version="13.9")
    assert not passed
    assert message.startswith("gs-gpu: no minimum driver known for CUDA 13.9 (known: 11.0, 11.1,")
    assert driver_check(name, "580.1")[0]


def test_nvcc_release() -> None:
    output = (
        "nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2022 NVIDIA Corporation\n"
        "Built on Wed_Sep_21_10:33:58_PDT_2022\nCuda compilation tools, release 11.8, V11.8.89\n"
    )
    assert stack.nvcc_release(output) == "11.8"
    assert stack.nvcc_release("command not found") is None


# --------------------------------------------------------------------------- daemon.json

DAEMON_JSON = ROLES / "container_runtime" / "templates" / "etc" / "docker" / "daemon.json.j2"
DAEMON_TASKS = ROLES / "container_runtime" / "tasks" / "daemon.yml"


def runtime_vars(**changes: Any) -> dict[str, Any]:
    defaults = load_yaml(ROLES / "container_runtime" / "defaults" / "main.yml")
    facts = {"container_runtime_nvidia_enabled": True, "inventory_hostname": "gs-gpu"}
    return {**defaults, **facts, **changes}


def daemon_json(**changes: Any) -> str:
    return role_templar(runtime_vars(**changes)).template(
        trust_as_template(DAEMON_JSON.read_text())
    )


def test_daemon_json_with_the_nvidia_runtime_and_site_options_last() -> None:
    text = daemon_json(
        container_runtime_data_root="/srv/docker",
        container_runtime_nvidia_default=True,
        container_runtime_daemon_options={"storage-driver": "overlay2", "live-restore": False},
    )
    assert text.startswith('{\n  "data-root"')  # nothing before the JSON: no comment, no marker
    assert json.loads(text) == {
        "data-root": "/srv/docker",
        "log-driver": "json-file",
        "log-opts": {"max-size": "100m", "max-file": "5"},
        "live-restore": False,
        "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": []}},
        "default-runtime": "nvidia",
        "storage-driver": "overlay2",
    }
    plain = json.loads(
        daemon_json(
            container_runtime_nvidia_enabled=False,
            container_runtime_log_max_size="10m",
            container_runtime_log_max_file=3,
        )
    )
    assert "runtimes" not in plain
    assert "default-runtime" not in plain
    assert plain["log-opts"] == {"max-size": "10m", "max-file": "3"}
    assert plain["live-restore"] is True


def test_daemon_json_is_what_the_role_wrote_before_it_was_a_template() -> None:
    # The same bytes as the role's former `copy:` of `config | to_nice_json(indent=2)` and a
    # newline, so hosts that have it see no change and Docker does not restart.
    text = daemon_json(container_runtime_nvidia_enabled=False)
    assert text == (
        '{\n  "data-root": "/var/lib/docker",\n  "live-restore": true,\n'
        '  "log-driver": "json-file",\n'
        '  "log-opts": {\n    "max-file": "5",\n    "max-size": "100m"\n  }\n}\n'
    )


def test_the_nvidia_runtime_as_default_needs_the_runtime() -> None:
    name = "Check that the NVIDIA runtime is there to be the default"
    check = task(DAEMON_TASKS, name)["ansible.builtin.assert"]

    def passes(**changes: Any) -> bool:
        render = role_templar(runtime_vars(**changes))
        return render.evaluate_conditional(trust_as_template(check["that"]))

    assert not passes(container_runtime_nvidia_enabled=False, container_runtime_nvidia_default=True)
    assert passes(container_runtime_nvidia_enabled=True, container_runtime_nvidia_default=True)
    assert passes(container_runtime_nvidia_enabled=False, container_runtime_nvidia_default=False)
    render = role_templar(runtime_vars(container_runtime_nvidia=False))
    message = render.template(trust_as_template(check["fail_msg"]))
    assert message.startswith("gs-gpu: container_runtime_nvidia_default is true on a host without")
