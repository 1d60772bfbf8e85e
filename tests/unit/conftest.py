"""Shared fixtures for the unit tests of the project's modules.

Each ``plugins/module_utils/<name>.py`` is registered as ``<name>`` and as
``ansible.module_utils.<name>`` (where Ansible puts a project module_utils
file), and each ``plugins/modules/<name>.py`` as ``<name>``, so tests import
them by those names whatever the working directory.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import ansible.module_utils
import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from helpers import write_sysfs

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_UTILS_FILE = REPO_ROOT / "plugins" / "module_utils" / "llmfleet_gpu.py"
MODULE_FILE = REPO_ROOT / "plugins" / "modules" / "gpu_facts.py"
CAPTURES_DIR = REPO_ROOT / "tests" / "captures"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _register() -> None:
    if "gpu_facts" in sys.modules:
        return
    for path in sorted(MODULE_UTILS_FILE.parent.glob("*.py")):
        utils = _load(path.stem, path)
        sys.modules[f"ansible.module_utils.{path.stem}"] = utils
        setattr(ansible.module_utils, path.stem, utils)
    for path in sorted(MODULE_FILE.parent.glob("*.py")):
        _load(path.stem, path)


_register()


@pytest.fixture
def captures_dir() -> Path:
    """tests/captures: the project's own nvidia-smi documents."""
    return CAPTURES_DIR


@pytest.fixture
def capture() -> Callable[[str], bytes]:
    """Bytes of a project capture in tests/captures, by file name."""

    def read(name: str) -> bytes:
        return (CAPTURES_DIR / name).read_bytes()

    return read


MEMINFO = """\
MemTotal:       65536000 kB
MemFree:        60000000 kB
MemAvailable:   62000000 kB
Buffers:          120000 kB
"""

#: Devices of the default fake PCI bus: address -> sysfs attribute files.
PCI_DEVICES: dict[str, dict[str, str]] = {
    # Intel iGPU: a VGA controller, but not NVIDIA.
    "0000:00:02.0": {"vendor": "0x8086", "class": "0x030000", "device": "0x4680"},
    # NVIDIA VGA controller (GeForce), gen 4 x16 idling at gen 1.
    "0000:01:00.0": {
        "vendor": "0x10de",
        "class": "0x030000",
        "device": "0x2504",
        "max_link_speed": "16.0 GT/s PCIe",
        "max_link_width": "16",
        "current_link_speed": "2.5 GT/s PCIe",
        "current_link_width": "16",
    },
    # Its HDMI audio function: NVIDIA, but not a GPU.
    "0000:01:00.1": {"vendor": "0x10de", "class": "0x040300", "device": "0x228e"},
    # NVIDIA 3D controller (datacenter card) in an x8 link at gen 3.
    "0000:41:00.0": {
        "vendor": "0x10de",
        "class": "0x030200",
        "device": "0x20b0",
        "max_link_speed": "16.0 GT/s PCIe",
        "max_link_width": "16",
        "current_link_speed": "8.0 GT/s PCIe",
        "current_link_width": "8",
    },
    # NVSwitch: a bridge, counted apart, never a GPU.
    "0000:c3:00.0": {"vendor": "0x10de", "class": "0x068000", "device": "0x1af1"},
    "0000:c4:00.0": {"vendor": "0x10de", "class": "0x068000", "device": "0x1af1"},
}


def build_sysfs(
    root: Path,
    devices: Mapping[str, Mapping[str, str]] | None = None,
    numa_nodes: int | None = 2,
    nvidia_module_version: str | None = None,
) -> Path:
    """Write a fake sysfs tree under ``root`` (PCI_DEVICES unless told) and return it."""
    return write_sysfs(
        root, PCI_DEVICES if devices is None else devices, numa_nodes, nvidia_module_version
    )


@pytest.fixture
def fake_sysfs(tmp_path: Path) -> Path:
    """A sysfs tree with two NVIDIA GPUs, two NVSwitches and noise; 2 NUMA nodes."""
    return build_sysfs(tmp_path / "sys")


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    """A procfs tree with a meminfo of 65536000 kB (64000 MiB)."""
    root = tmp_path / "proc"
    root.mkdir()
    (root / "meminfo").write_text(MEMINFO)
    return root


@pytest.fixture
def make_sysfs(tmp_path: Path) -> Callable[..., Path]:
    """Factory for fake sysfs trees: ``make_sysfs(devices=..., numa_nodes=...)``."""
    made: list[Path] = []

    def make(**kwargs: object) -> Path:
        root = tmp_path / f"sys{len(made)}"
        made.append(root)
        return build_sysfs(root, **kwargs)  # type: ignore[arg-type]

    return make


class ModuleExit(Exception):
    """An Ansible module called exit_json (args[0]: what it returned)."""


class ModuleFail(Exception):
    """An Ansible module called fail_json (args[0]: what it returned)."""


@pytest.fixture
def ansible_module(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, Any]]:
    """Runs a module's ``main()`` with arguments: ``ansible_module(main, args, fails=False)``
    returns the dict it exits with (``fails=True``: fails with); the other ending fails the test.
    """

    def exit_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
        raise ModuleExit(kwargs)

    def fail_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
        raise ModuleFail(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(main: Callable[[], None], args: dict[str, Any], fails: bool = False) -> dict[str, Any]:
        with patch_module_args(args), pytest.raises(ModuleFail if fails else ModuleExit) as ended:
            main()
        return ended.value.args[0]

    return run
