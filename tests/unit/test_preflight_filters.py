"""The preflight role's filters: disk room, PCIe links and the summary line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "llmfleet_preflight.py"
spec = importlib.util.spec_from_file_location("llmfleet_preflight_filters", PLUGIN)
assert spec and spec.loader
filters = importlib.util.module_from_spec(spec)
spec.loader.exec_module(filters)

GIB = 1024**3


def probe(path: str, gib: float, what: str, df_line: str) -> dict:
    """One result of the role's df probe, as Ansible registers it in a loop."""
    return {"item": {"path": path, "gib": gib, "what": what}, "stdout": df_line}


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("10737418240 /", ("/", 10 * GIB)),
        ("  53687091200 /data", ("/data", 50 * GIB)),
        ("1024 /mnt/with space", ("/mnt/with space", 1024)),
    ],
)
def test_parse_df_avail(line: str, parsed: tuple) -> None:
    assert filters.parse_df_avail(line) == parsed


def test_parse_df_avail_rejects_other_output() -> None:
    with pytest.raises(ValueError, match="unexpected df output"):
        filters.parse_df_avail("Avail Mounted on")


def test_disk_shortfalls_is_empty_when_everything_fits() -> None:
    measured = [
        probe("/opt/llmfleet", 4, "engine builds", f"{10 * GIB} /"),
        probe("/data/models", 41, "models", f"{50 * GIB} /data"),
    ]
    assert filters.disk_shortfalls(measured) == []


def test_disk_shortfalls_adds_up_paths_on_the_same_filesystem() -> None:
    measured = [
        probe("/opt/llmfleet", 4, "engine builds", f"{10 * GIB} /"),
        probe("/srv/models", 7, "models of tier standard", f"{10 * GIB} /"),
    ]
    [problem] = filters.disk_shortfalls(measured)
    assert problem.startswith("/ has 10.0 GiB free, needs 11 GiB")
    assert "engine builds in /opt/llmfleet 4 GiB" in problem
    assert "models of tier standard in /srv/models 7 GiB" in problem


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
