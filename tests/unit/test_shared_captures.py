"""Sweep the parser over real `nvidia-smi -q -x` captures kept outside the repository.

The captures live in ``<repo>/../shared/fixtures/nvidia-smi`` (override with
``LLMFLEET_SHARED_FIXTURES``), in one folder per source project. They are not
copied into the project; where they are absent this whole module is skipped.
Every ``*.xml`` under that folder is parsed, including any added later, so the
assertions here are about invariants, not about particular files; the few
targeted checks at the end skip when their file is missing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import llmfleet_gpu as g
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(
    os.environ.get("LLMFLEET_SHARED_FIXTURES")
    or REPO_ROOT.parent / "shared" / "fixtures" / "nvidia-smi"
)

if not SHARED.is_dir():
    pytest.skip(f"shared nvidia-smi captures not found at {SHARED}", allow_module_level=True)

CAPTURES = sorted(SHARED.rglob("*.xml"))
ALLOWED_TIERS = {"base", "standard", "pro", "enterprise", "cpu", None}
JUNK = {
    s.casefold()
    for s in (
        "N/A",
        "[N/A]",
        "Not Supported",
        "[Not Supported]",
        "Not Found",
        "Unknown Error",
        "[Unknown Error]",
        "Requested functionality has been deprecated",
        "None",
    )
}
_COMMENT = re.compile(rb"<!--.*?-->", re.DOTALL)
_GPU_TAG = re.compile(rb"<gpu[\s>/]")


def _by_name(name: str) -> Path | None:
    return next((path for path in CAPTURES if path.name == name), None)


def _gpu_elements(data: bytes) -> int:
    """``<gpu>`` start tags, counted on the raw text (comments removed)."""
    return len(_GPU_TAG.findall(_COMMENT.sub(b"", data)))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _facts(path: Path) -> tuple[dict[str, Any], str | None]:
    doc = g.parse_nvidia_smi_xml(path.read_bytes())
    hardware = g.build_hardware_facts(
        smi=doc,
        pci=None,
        nvidia_module=(False, None),
        memory_total_mib=None,
        cpu_cores=None,
        numa_nodes=None,
    )
    tier = g.decide_tier(
        hardware["source"], hardware["usable_vram_mib"], g.DEFAULT_TIERS, hardware["problems"]
    )
    return hardware, tier


def test_there_are_captures() -> None:
    assert CAPTURES, f"no *.xml under {SHARED}"


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(SHARED)))
def test_capture_invariants(path: Path) -> None:
    hardware, tier = _facts(path)

    assert hardware["source"] == "nvidia-smi"
    problems = hardware["problems"]
    assert all(
        isinstance(problem, str) and problem.startswith("nvidia-smi") for problem in problems
    )
    # A <gpu> repeating a bus id is counted once, and said so.
    repeats = sum("repeats <gpu>" in problem for problem in problems)
    assert hardware["gpu_count"] == len(hardware["gpus"])
    assert hardware["gpu_count"] + repeats == _gpu_elements(path.read_bytes())
    # Every bad input is a reason and undecides the tier; every unknown VRAM has a reason.
    if problems:
        assert tier is None, problems
    if hardware["usable_vram_mib"] is None:
        assert problems, "usable VRAM unknown without a reason"
    assert [gpu["index"] for gpu in hardware["gpus"]] == list(range(hardware["gpu_count"]))
    for gpu in hardware["gpus"]:
        memory = gpu["memory_total_mib"]
        assert memory is None or (isinstance(memory, int) and memory > 0), gpu
        assert memory is None or memory <= g.MAX_GPU_VRAM_MIB, gpu
        # Never a MIG slice: the whole card is larger than any of its instances.
        if memory is not None and gpu["mig_instances_mib"]:
            assert memory > max(gpu["mig_instances_mib"]), gpu
        assert all(isinstance(size, int) and size > 0 for size in gpu["mig_instances_mib"])
        assert gpu["mig_enabled"] in (True, False, None)
        for key in ("pcie_gen_max", "pcie_gen_current", "pcie_width_max", "pcie_width_current"):
            assert gpu[key] is None or (isinstance(gpu[key], int) and gpu[key] > 0), (key, gpu)
        for key in ("pcie_gen_max", "pcie_gen_current", "pcie_gen_max_device"):
            assert gpu[key] is None or gpu[key] <= 6, (key, gpu)
        for key in ("pcie_width_max", "pcie_width_current"):
            assert gpu[key] is None or gpu[key] in g.PCIE_LINK_WIDTHS, (key, gpu)
    assert tier in ALLOWED_TIERS
    for text in _strings(hardware):
        assert text.casefold() not in JUNK, text
        assert text == text.strip(), repr(text)


# ---------------------------------------------------------------------------
# Targeted checks on named real files (each skips when its file is absent)
# ---------------------------------------------------------------------------


def _needs(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(_by_name(name) is None, reason=f"{name} not in {SHARED}")


def _named(name: str) -> tuple[dict[str, Any], str | None]:
    path = _by_name(name)
    assert path is not None
    return _facts(path)


@_needs("a100-sxm4-mig.xml")
def test_a100_mig_whole_card_and_instances() -> None:
    hardware, tier = _named("a100-sxm4-mig.xml")
    (gpu,) = hardware["gpus"]
    assert gpu["memory_total_mib"] == 40960
    assert gpu["mig_enabled"] is True
    assert gpu["mig_instances_mib"] == [19968, 19968]
    assert hardware["usable_vram_mib"] == 19968
    assert tier == "pro"


@_needs("rtx-4090-driver-535.xml")
def test_rtx_4090_on_gen3_host() -> None:
    hardware, tier = _named("rtx-4090-driver-535.xml")
    (gpu,) = hardware["gpus"]
    assert gpu["pcie_gen_max"] == 3  # lower of device and host
    assert gpu["pcie_gen_max_device"] == 4
    assert gpu["pcie_gen_max_host"] == 3
    assert gpu["pcie_gen_current"] == 1
    assert gpu["memory_total_mib"] == 24564
    assert gpu["mig_enabled"] is False  # current_mig N/A: cannot partition
    assert gpu["pci_bus_id"] == "0000:84:00.0"
    assert tier == "pro"


@_needs("gtx-1660-ti.xml")
def test_gtx_1660_ti_cuda_version() -> None:
    hardware, tier = _named("gtx-1660-ti.xml")
    assert hardware["driver_version"] == "418.43"
    assert hardware["cuda_version"] == "10.1"
    assert hardware["gpus"][0]["memory_total_mib"] == 5912
    # Driver 418 predates mig_mode (R450): MIG cannot be on.
    assert hardware["gpus"][0]["mig_enabled"] is False
    assert tier == "base"


@_needs("example2.xml")
def test_example2_inline_dtd_and_no_cuda_version() -> None:
    hardware, tier = _named("example2.xml")
    assert hardware["driver_version"] == "352.99"
    assert hardware["cuda_version"] is None  # element absent before driver 410
    (gpu,) = hardware["gpus"]
    assert gpu["name"] == "GRID K520"
    assert gpu["pci_bus_id"] == "0000:00:03.0"  # 4-digit domain in old drivers
    assert gpu["memory_total_mib"] == 4095
    assert tier == "base"


@_needs("nvidia_smi_sample.xml")
def test_attached_gpus_disagrees_with_elements() -> None:
    hardware, tier = _named("nvidia_smi_sample.xml")
    assert hardware["attached_gpus"] == 6
    assert hardware["gpu_count"] == 2
    assert [gpu["memory_total_mib"] for gpu in hardware["gpus"]] == [8112, 8114]
    assert hardware["usable_vram_mib"] == 16226
    assert tier == "pro"


@_needs("nvidia_smi_out_of_order.xml")
def test_cuda_not_found_and_wide_pci_domains() -> None:
    hardware, _ = _named("nvidia_smi_out_of_order.xml")
    assert hardware["cuda_version"] is None  # "Not Found"
    assert [gpu["pci_bus_id"] for gpu in hardware["gpus"]] == [
        "1580:00:00.0",
        "2df7:00:00.0",
        "4968:00:00.0",
        "f8d6:00:00.0",
    ]


@_needs("tesla_p4.xml")
def test_vgpu_guest_pcie_is_unknown() -> None:
    hardware, _ = _named("tesla_p4.xml")
    (gpu,) = hardware["gpus"]
    assert gpu["pcie_gen_max"] is None
    assert gpu["pcie_width_current"] is None
    assert gpu["memory_total_mib"] == 1024


@_needs("rtx-pro-6000-driver-580.xml")
def test_document_without_memory_leaves_tier_undecided() -> None:
    hardware, tier = _named("rtx-pro-6000-driver-580.xml")
    assert hardware["driver_version"] is None
    assert hardware["gpus"][0]["memory_total_mib"] is None
    assert hardware["usable_vram_mib"] is None
    assert tier is None
    assert hardware["problems"] == [
        "nvidia-smi <gpu> 0 (0000:01:00.0): fb_memory_usage/total is not reported; "
        "its usable VRAM is unknown"
    ]


def test_no_capture_has_a_problem_but_the_one_without_memory() -> None:
    # The sweep's guard against a regression: the tightened checks must not reject
    # real documents. Only the driver-580 capture (no memory block) has a reason.
    with_problems = {path.name for path in CAPTURES if _facts(path)[0]["problems"]}
    assert with_problems <= {"rtx-pro-6000-driver-580.xml"}
