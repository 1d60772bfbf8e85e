"""Filters used by the preflight role: disk room, PCIe links, the summary line.

Pure functions over facts; no I/O. Unit tests: tests/unit/test_preflight_filters.py.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

GIB = 1024**3


def disk_shortfalls(
    requirements: list[dict[str, Any]], filesystems: list[dict[str, Any]]
) -> list[str]:
    """Filesystems that lack room for what is to be installed on them.

    ``requirements`` are ``{path, gib, what}``; ``filesystems`` the ``free_space`` module's
    result for the same paths, in the same order (``{path, mount, avail_bytes}``). Paths on
    the same filesystem add up. Returns one message per filesystem that is too small; an
    empty list when all fit.
    """
    if len(requirements) != len(filesystems):
        raise ValueError(
            f"{len(requirements)} disk requirements but {len(filesystems)} measured filesystems"
        )
    needs: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for item, measured in zip(requirements, filesystems, strict=True):
        entry = needs.setdefault(
            measured["mount"], {"free": int(measured["avail_bytes"]), "gib": 0.0, "uses": []}
        )
        entry["gib"] += float(item["gib"])
        entry["uses"].append(f"{item['what']} in {item['path']} {float(item['gib']):g} GiB")
    problems = []
    for mount, entry in needs.items():
        free_gib = entry["free"] / GIB
        if free_gib < entry["gib"]:
            problems.append(
                f"{mount} has {free_gib:.1f} GiB free, needs {entry['gib']:g} GiB "
                f"({'; '.join(entry['uses'])})"
            )
    return problems


def pcie_narrow_links(gpus: list[dict[str, Any]]) -> list[str]:
    """GPUs whose PCIe link runs narrower than its maximum (a riser or slot problem)."""
    narrow = []
    for gpu in gpus:
        width, widest = gpu.get("pcie_width_current"), gpu.get("pcie_width_max")
        if width is not None and widest is not None and width < widest:
            narrow.append(
                f"GPU {gpu.get('index')} ({gpu.get('name') or 'unknown'}, "
                f"{gpu.get('pci_bus_id')}) runs at x{width} of x{widest}"
            )
    return narrow


def hardware_summary(hardware: dict[str, Any], tier: str | None, tier_source: str) -> str:
    """One line a person reads in the play output: GPUs, VRAM, RAM, CPU and tier."""
    gpus = hardware.get("gpus") or []
    names: OrderedDict[str, int] = OrderedDict()
    for gpu in gpus:
        name = gpu.get("name") or gpu.get("pci_device_id") or "NVIDIA GPU"
        if gpu.get("mig_enabled"):
            name += " (MIG)"
        names[name] = names.get(name, 0) + 1
    gpu_text = ", ".join(f"{count}x {name}" for name, count in names.items()) or "no GPU"
    vram = hardware.get("usable_vram_mib")
    ram = hardware.get("memory_total_mib")
    parts = [
        gpu_text,
        f"usable VRAM {vram} MiB" if vram is not None else "usable VRAM unknown",
        f"driver {hardware.get('driver_version')}"
        if hardware.get("driver_loaded")
        else "no driver loaded",
        f"RAM {ram / 1024:.1f} GiB" if ram else "RAM unknown",
        f"{hardware.get('cpu_cores')} cores",
        f"source {hardware.get('source')}",
    ]
    tier_text = f"tier {tier} ({tier_source})" if tier else "tier undecided until a driver answers"
    return f"{tier_text}: " + "; ".join(parts)


class FilterModule:
    """llmfleet preflight filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "llmfleet_disk_shortfalls": disk_shortfalls,
            "llmfleet_pcie_narrow_links": pcie_narrow_links,
            "llmfleet_hardware_summary": hardware_summary,
        }
