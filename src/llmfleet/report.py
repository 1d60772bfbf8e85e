"""The fleet's hardware report, read from Ansible's jsonfile fact cache.

Reads the cache through Ansible's cache plugin (the control node has Ansible),
since the files' layout is Ansible's own and changes between releases.

`preflight` leaves `llmfleet_hardware`, `llmfleet_tier` and
`preflight_tier` in the cache (one JSON file per host); this turns them
into a table an operator reads, without touching any host.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

COLUMNS = ("host", "tier", "source", "gpus", "usable VRAM", "driver", "CUDA", "RAM", "cores")


@functools.cache
def _ansible_plugins_ready() -> None:
    """Ansible's plugin loader, set up once per process."""
    from ansible.plugins.loader import init_plugin_loader

    init_plugin_loader()


def open_fact_cache(folder: Path) -> Any:
    """Ansible's own jsonfile cache plugin on `folder`, so the file format is Ansible's concern."""
    from ansible.plugins.loader import cache_loader

    _ansible_plugins_ready()
    return cache_loader.get("ansible.builtin.jsonfile", _uri=str(folder), _prefix="", _timeout=0)


def load_fact_cache(folder: Path) -> dict[str, dict[str, Any]]:
    """Facts per host from a jsonfile fact cache folder (hosts without llmfleet facts left out)."""
    from ansible.errors import AnsibleError

    if not folder.is_dir():
        return {}
    cache = open_fact_cache(folder)
    hosts: dict[str, dict[str, Any]] = {}
    cached_hosts = cache.keys()  # a cache plugin, not a dict: keys() reads the folder
    for host in cached_hosts:
        try:
            facts = cache.get(host)
        except (AnsibleError, ValueError, OSError):  # a damaged entry leaves out that host only
            continue
        if isinstance(facts, dict) and "llmfleet_hardware" in facts:
            hosts[host] = facts
    return hosts


def _gpu_text(hardware: dict[str, Any]) -> str:
    gpus = hardware.get("gpus") or []
    if not gpus:
        return "-"
    names: dict[str, int] = {}
    for gpu in gpus:
        name = gpu.get("name") or gpu.get("pci_device_id") or "NVIDIA GPU"
        if gpu.get("mig_enabled"):
            name += " (MIG)"
        names[name] = names.get(name, 0) + 1
    return ", ".join(f"{count}x {name}" for name, count in names.items())


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f} GiB"


def report_rows(hosts: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per host, in the order of COLUMNS."""
    rows = []
    for host, facts in sorted(hosts.items()):
        hardware = facts["llmfleet_hardware"]
        tier = facts.get("preflight_tier", facts.get("llmfleet_tier"))
        source = facts.get("preflight_tier_source", "detected")
        rows.append(
            (
                host,
                f"{tier or 'undecided'} ({source})",
                str(hardware.get("source")),
                _gpu_text(hardware),
                _mib(hardware.get("usable_vram_mib")),
                hardware.get("driver_version") or "-",
                hardware.get("cuda_version") or "-",
                _mib(hardware.get("memory_total_mib")),
                str(hardware.get("cpu_cores") if hardware.get("cpu_cores") is not None else "-"),
            )
        )
    return rows


def format_table(rows: list[tuple[str, ...]], columns: tuple[str, ...] = COLUMNS) -> str:
    """A plain text table, columns padded to their widest cell."""
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(columns, *rows, strict=False)
    ]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [columns, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
