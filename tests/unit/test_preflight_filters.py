"""The preflight role's filters: disk room, PCIe links and the summary line."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_module_file

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "llmfleet_preflight.py"
filters = load_module_file("llmfleet_preflight_filters", PLUGIN)

GIB = 1024**3


def need(path: str, gib: float, what: str) -> dict:
    return {"path": path, "gib": gib, "what": what}


def measured(path: str, mount: str, avail: int) -> dict:
    """One entry of the free_space module's result."""
    return {"path": path, "existing": mount, "mount": mount, "avail_bytes": avail}


def test_disk_shortfalls_is_empty_when_everything_fits() -> None:
    needs = [need("/opt/llmfleet", 4, "engine builds"), need("/data/models", 41, "models")]
    filesystems = [
        measured("/opt/llmfleet", "/", 10 * GIB),
        measured("/data/models", "/data", 50 * GIB),
    ]
    assert filters.disk_shortfalls(needs, filesystems) == []


def test_disk_shortfalls_adds_up_paths_on_the_same_filesystem() -> None:
    needs = [
        need("/opt/llmfleet", 4, "engine builds"),
        need("/srv/models", 7, "models of tier standard"),
    ]
    filesystems = [measured("/opt/llmfleet", "/", 10 * GIB), measured("/srv/models", "/", 10 * GIB)]
    [problem] = filters.disk_shortfalls(needs, filesystems)
    assert problem.startswith("/ has 10.0 GiB free, needs 11 GiB")
    assert "engine builds in /opt/llmfleet 4 GiB" in problem
    assert "models of tier standard in /srv/models 7 GiB" in problem


def test_disk_shortfalls_refuses_results_that_do_not_match_the_needs() -> None:
    with pytest.raises(ValueError, match="1 disk requirements but 0 measured"):
        filters.disk_shortfalls([need("/data", 1, "models")], [])


def test_pcie_narrow_links_reports_only_links_below_their_maximum() -> None:
    gpus = [
        {
            "index": 0,
            "name": "RTX A5000",
            "pci_bus_id": "00000000:01:00.0",
            "pcie_width_current": 16,
            "pcie_width_max": 16,
        },
        {
            "index": 1,
            "name": "RTX A5000",
            "pci_bus_id": "00000000:02:00.0",
            "pcie_width_current": 8,
            "pcie_width_max": 16,
        },
        {
            "index": 2,
            "name": "vGPU",
            "pci_bus_id": None,
            "pcie_width_current": None,
            "pcie_width_max": None,
        },
    ]
    assert filters.pcie_narrow_links(gpus) == [
        "GPU 1 (RTX A5000, 00000000:02:00.0) runs at x8 of x16"
    ]


def test_hardware_summary_names_gpus_vram_and_tier() -> None:
    hardware = {
        "source": "nvidia-smi",
        "driver_loaded": True,
        "driver_version": "535.104.05",
        "gpus": [{"name": "NVIDIA A100-SXM4-40GB", "mig_enabled": True}],
        "usable_vram_mib": 19968,
        "memory_total_mib": 262144,
        "cpu_cores": 32,
    }
    assert filters.hardware_summary(hardware, "pro", "detected") == (
        "tier pro (detected): 1x NVIDIA A100-SXM4-40GB (MIG); usable VRAM 19968 MiB; "
        "driver 535.104.05; RAM 256.0 GiB; 32 cores; source nvidia-smi"
    )


def test_hardware_summary_of_a_host_without_driver() -> None:
    hardware = {
        "source": "pci",
        "driver_loaded": False,
        "gpus": [{"pci_device_id": "0x20b0"}],
        "usable_vram_mib": None,
        "memory_total_mib": 2048,
        "cpu_cores": 2,
    }
    assert filters.hardware_summary(hardware, None, "undecided") == (
        "tier undecided until a driver answers: 1x 0x20b0; usable VRAM unknown; no driver loaded; "
        "RAM 2.0 GiB; 2 cores; source pci"
    )
