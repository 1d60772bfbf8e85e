"""`llmfleet report`: the hardware table from the jsonfile fact cache."""

from __future__ import annotations

from pathlib import Path

from llmfleet.cli import main
from llmfleet.report import format_table, load_fact_cache, open_fact_cache, report_rows

A100 = {
    "llmfleet_hardware": {
        "source": "nvidia-smi",
        "driver_version": "535.104.05",
        "cuda_version": "12.2",
        "gpus": [{"name": "NVIDIA A100-SXM4-40GB", "mig_enabled": True}],
        "usable_vram_mib": 19968,
        "memory_total_mib": 262144,
        "cpu_cores": 32,
    },
    "llmfleet_tier": "pro",
    "preflight_tier": "pro",
    "preflight_tier_source": "detected",
}
FRESH = {
    "llmfleet_hardware": {
        "source": "pci",
        "driver_version": None,
        "cuda_version": None,
        "gpus": [{"pci_device_id": "0x20b0"}],
        "usable_vram_mib": None,
        "memory_total_mib": 2048,
        "cpu_cores": 2,
    },
    "llmfleet_tier": None,
}


def write_cache(folder: Path) -> None:
    """Write the cache the way ansible-playbook does, with Ansible's own plugin."""
    cache = open_fact_cache(folder)
    cache.set("gpu-01", A100)
    cache.set("fresh-01", FRESH)
    cache.set("not-a-fleet-host", {"ansible_hostname": "x"})


def test_load_fact_cache_keeps_hosts_with_llmfleet_facts(tmp_path: Path) -> None:
    write_cache(tmp_path)
    assert sorted(load_fact_cache(tmp_path)) == ["fresh-01", "gpu-01"]


def test_report_rows(tmp_path: Path) -> None:
    write_cache(tmp_path)
    rows = report_rows(load_fact_cache(tmp_path))
    assert rows == [
        ("fresh-01", "undecided (detected)", "pci", "1x 0x20b0", "-", "-", "-", "2.0 GiB", "2"),
        (
            "gpu-01",
            "pro (detected)",
            "nvidia-smi",
            "1x NVIDIA A100-SXM4-40GB (MIG)",
            "19.5 GiB",
            "535.104.05",
            "12.2",
            "256.0 GiB",
            "32",
        ),
    ]


def test_format_table_pads_columns() -> None:
    table = format_table([("a", "bb")], columns=("x", "y"))
    assert table.splitlines() == ["x  y", "-  --", "a  bb"]


def test_cli_report(tmp_path: Path, capsys) -> None:
    write_cache(tmp_path)
    assert main(["report", "--facts", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gpu-01" in out and "pro (detected)" in out


def test_cli_report_without_facts(tmp_path: Path, capsys) -> None:
    assert main(["report", "--facts", str(tmp_path)]) == 1
    assert "run the preflight first" in capsys.readouterr().err
