"""Parser, tier rule and sysfs/procfs readers of plugins/module_utils/llmfleet_gpu.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import llmfleet_gpu as g
import pytest

# ---------------------------------------------------------------------------
# Project captures: exact values
# ---------------------------------------------------------------------------


def _parse(capture: Any, name: str) -> dict[str, Any]:
    return g.parse_nvidia_smi_xml(capture(name))


def _tier(doc: dict[str, Any]) -> str | None:
    usable = g.host_usable_vram_mib(doc["gpus"])
    return g.decide_tier(g.SOURCE_NVIDIA_SMI, usable, g.DEFAULT_TIERS)


def test_rtx_3060(capture: Any) -> None:
    doc = _parse(capture, "rtx-3060.xml")
    assert doc["driver_version"] == "535.161.07"
    assert doc["cuda_version"] == "12.2"
    assert doc["attached_gpus"] == 1
    assert doc["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA GeForce RTX 3060",
            "uuid": "GPU-3c0f6a1e-52d4-4b7e-9a10-6f2d8e4b7a31",
            "pci_bus_id": "0000:01:00.0",
            "pci_device_id": "0x2504",
            "memory_total_mib": 12288,
            "mig_enabled": False,
            "mig_instances_mib": [],
            "usable_vram_mib": 12288,
            "pcie_gen_max": 4,
            "pcie_gen_max_device": 4,
            "pcie_gen_max_host": 4,
            "pcie_gen_current": 1,
            "pcie_width_max": 16,
            "pcie_width_current": 16,
            "compute_capability": None,
        }
    ]
    assert g.host_usable_vram_mib(doc["gpus"]) == 12288
    assert _tier(doc) == "standard"


def test_a100_mig_counts_largest_instance_not_a_slice(capture: Any) -> None:
    doc = _parse(capture, "a100-mig.xml")
    (gpu,) = doc["gpus"]
    assert gpu["name"] == "NVIDIA A100-SXM4-40GB"
    # The GPU's own fb_memory_usage, not the first MIG device's block.
    assert gpu["memory_total_mib"] == 40960
    assert gpu["mig_enabled"] is True
    assert gpu["mig_instances_mib"] == [19968, 19968, 9728]
    assert gpu["usable_vram_mib"] == 19968
    assert gpu["pci_bus_id"] == "0000:07:00.0"
    assert gpu["pci_device_id"] == "0x20b0"
    assert (gpu["pcie_gen_max"], gpu["pcie_gen_current"]) == (4, 4)
    assert g.host_usable_vram_mib(doc["gpus"]) == 19968
    assert _tier(doc) == "pro"


def test_t4_reporting_15360_is_pro(capture: Any) -> None:
    doc = _parse(capture, "t4.xml")
    (gpu,) = doc["gpus"]
    assert gpu["name"] == "Tesla T4"
    assert gpu["memory_total_mib"] == 15360
    assert gpu["pci_bus_id"] == "0000:00:1e.0"
    assert (gpu["pcie_gen_max"], gpu["pcie_gen_current"]) == (3, 1)
    assert (gpu["pcie_width_max"], gpu["pcie_width_current"]) == (16, 16)
    assert _tier(doc) == "pro"


def test_dual_a5000_second_card_in_narrow_link(capture: Any) -> None:
    doc = _parse(capture, "dual-a5000-narrow.xml")
    first, second = doc["gpus"]
    assert [first["index"], second["index"]] == [0, 1]
    assert first["name"] == second["name"] == "NVIDIA RTX A5000"
    assert first["memory_total_mib"] == second["memory_total_mib"] == 24564
    assert (first["pcie_width_max"], first["pcie_width_current"]) == (16, 16)
    assert (second["pcie_width_max"], second["pcie_width_current"]) == (16, 8)
    assert second["pci_bus_id"] == "0000:c1:00.0"
    assert second["uuid"] == "GPU-6f1d2c3b-4a59-4e8d-9c7b-1a2b3c4d5e02"
    assert g.host_usable_vram_mib(doc["gpus"]) == 49128
    assert _tier(doc) == "enterprise"


def test_old_driver_inline_dtd_no_cuda_no_mig(capture: Any) -> None:
    doc = _parse(capture, "old-driver-no-cuda.xml")
    assert doc["driver_version"] == "390.87"
    assert doc["cuda_version"] is None
    (gpu,) = doc["gpus"]
    assert gpu["name"] == "GeForce GTX 1080"
    # No mig_mode before R450, and MIG needs R450: off, not unknown.
    assert gpu["mig_enabled"] is False
    assert gpu["memory_total_mib"] == 8119
    assert gpu["pcie_gen_max"] == 3
    assert gpu["pcie_gen_max_device"] is None
    assert gpu["pcie_gen_max_host"] is None
    assert _tier(doc) == "standard"


def test_vgpu_guest(capture: Any) -> None:
    doc = _parse(capture, "vgpu-guest.xml")
    assert doc["driver_version"] == "535.161.08"
    assert doc["cuda_version"] is None  # "Not Found"
    assert doc["attached_gpus"] == 2
    assert len(doc["gpus"]) == 1  # elements, not the claim
    (gpu,) = doc["gpus"]
    assert gpu["name"] == "GRID T4-8Q"
    assert gpu["uuid"] == "GPU-a4c2e8f0-1b3d-11ee-9f2a-0c4de9b1a7c5"
    assert gpu["memory_total_mib"] == 7979
    for key in (
        "pcie_gen_max",
        "pcie_gen_max_device",
        "pcie_gen_max_host",
        "pcie_gen_current",
        "pcie_width_max",
        "pcie_width_current",
    ):
        assert gpu[key] is None, key
    assert _tier(doc) == "standard"


# ---------------------------------------------------------------------------
# Parser: shapes and failures
# ---------------------------------------------------------------------------

MINIMAL_GPU = """<gpu id="00000000:01:00.0">
  <product_name>Test GPU</product_name>
  {mig}
  <fb_memory_usage><total>{total}</total></fb_memory_usage>
</gpu>"""


def _doc(*gpus: str, head: str = "") -> str:
    return f"<nvidia_smi_log>{head}{''.join(gpus)}</nvidia_smi_log>"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no output"),
        (b"   \n\t", "no output"),
        (b"Failed to initialize NVML: Driver/library version mismatch\n", "not XML"),
        (b"<nvidia_smi_log><gpu>", "not well-formed"),
        (b"<?xml version='1.0'?><foo><gpu/></foo>", "<foo>"),
        (b"\x00\x01\x02garbage", "not XML"),
    ],
)
def test_parse_rejects_what_is_not_a_document(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        g.parse_nvidia_smi_xml(data)


def test_parse_skips_a_warning_line_before_the_document(capture: Any) -> None:
    data = b"WARNING: infoROM is corrupted at gpu 0000:01:00.0\n" + capture("rtx-3060.xml")
    assert g.parse_nvidia_smi_xml(data)["gpus"][0]["memory_total_mib"] == 12288


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda d: b"\xef\xbb\xbf" + d, id="utf-8-bom"),
        pytest.param(lambda d: d.decode().encode("utf-16"), id="utf-16-powershell"),
        pytest.param(lambda d: d.replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(lambda d: d + d, id="two-documents"),
        pytest.param(lambda d: d.decode(), id="str"),
        pytest.param(
            lambda d: d.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"'),
            id="str-utf16-decl",
        ),
    ],
)
def test_parse_survives_encodings_and_framing(capture: Any, transform: Any) -> None:
    doc = g.parse_nvidia_smi_xml(transform(capture("t4.xml")))
    assert [gpu["memory_total_mib"] for gpu in doc["gpus"]] == [15360]


def test_parse_ignores_trailing_text() -> None:
    data = _doc(MINIMAL_GPU.format(mig="", total="4096 MiB")) + "\ntrailing line\n"
    assert g.parse_nvidia_smi_xml(data)["gpus"][0]["memory_total_mib"] == 4096


def test_external_dtd_is_not_fetched() -> None:
    # A SYSTEM id that would fail (or hang) if anything tried to resolve it.
    data = (
        '<?xml version="1.0" ?>\n'
        '<!DOCTYPE nvidia_smi_log SYSTEM "http://192.0.2.1/nvsmi_device_v12.dtd">\n'
        + _doc(MINIMAL_GPU.format(mig="", total="1024 MiB"))
    )
    assert g.parse_nvidia_smi_xml(data)["gpus"][0]["memory_total_mib"] == 1024


def test_document_with_no_gpu_means_cpu_tier() -> None:
    doc = g.parse_nvidia_smi_xml(_doc(head="<driver_version>535.1</driver_version>"))
    assert doc["gpus"] == []
    assert g.host_usable_vram_mib(doc["gpus"]) == 0
    assert _tier(doc) == "cpu"


def test_gpu_without_id_or_pci_block() -> None:
    doc = g.parse_nvidia_smi_xml("<nvidia_smi_log><gpu><uuid>GPU-x</uuid></gpu></nvidia_smi_log>")
    gpu = doc["gpus"][0]
    assert gpu["uuid"] == "GPU-x"
    assert gpu["pci_bus_id"] is None
    assert gpu["memory_total_mib"] is None
    assert gpu["usable_vram_mib"] is None
    assert _tier(doc) is None


MIG_ON = "<mig_mode><current_mig>Enabled</current_mig></mig_mode>"


def _mig_device(gi: int, total: str | None) -> str:
    memory = f"<fb_memory_usage><total>{total}</total></fb_memory_usage>" if total else ""
    return f"<mig_device><gpu_instance_id>{gi}</gpu_instance_id>{memory}</mig_device>"


def test_mig_on_without_instances_counts_zero() -> None:
    mig = MIG_ON + "<mig_devices>\n None\n </mig_devices>"
    doc = g.parse_nvidia_smi_xml(_doc(MINIMAL_GPU.format(mig=mig, total="81920 MiB")))
    gpu = doc["gpus"][0]
    assert gpu["memory_total_mib"] == 81920
    assert gpu["mig_instances_mib"] == []
    assert gpu["usable_vram_mib"] == 0
    assert _tier(doc) == "cpu"


def test_mig_compute_instances_sharing_a_gpu_instance_are_listed_once() -> None:
    devices = _mig_device(1, "40192 MiB") + _mig_device(1, "40192 MiB") + _mig_device(5, "9728 MiB")
    mig = MIG_ON + f"<mig_devices>{devices}</mig_devices>"
    gpu = g.parse_nvidia_smi_xml(_doc(MINIMAL_GPU.format(mig=mig, total="81920 MiB")))["gpus"][0]
    assert gpu["mig_instances_mib"] == [40192, 9728]
    assert gpu["usable_vram_mib"] == 40192


def test_mig_instance_with_unreadable_memory_leaves_usable_unknown() -> None:
    devices = _mig_device(1, "19968 MiB") + _mig_device(2, "N/A") + _mig_device(3, None)
    mig = MIG_ON + f"<mig_devices>{devices}</mig_devices>"
    doc = g.parse_nvidia_smi_xml(_doc(MINIMAL_GPU.format(mig=mig, total="40960 MiB")))
    gpu = doc["gpus"][0]
    assert gpu["mig_instances_mib"] == [19968]
    assert gpu["usable_vram_mib"] is None
    assert g.host_usable_vram_mib(doc["gpus"]) is None
    assert _tier(doc) is None


@pytest.mark.parametrize(
    ("mig", "expected"),
    [
        ("", False),  # no mig_mode: driver before R450
        ("<mig_mode></mig_mode>", False),
        ("<mig_mode><current_mig>Disabled</current_mig></mig_mode>", False),
        ("<mig_mode><current_mig>N/A</current_mig></mig_mode>", False),
        ("<mig_mode><current_mig>[Not Supported]</current_mig></mig_mode>", False),
        ("<mig_mode><current_mig> Enabled </current_mig></mig_mode>", True),
        ("<mig_mode><current_mig>Unknown Error</current_mig></mig_mode>", None),
        ("<mig_mode><current_mig></current_mig></mig_mode>", None),
    ],
)
def test_mig_enabled_values(mig: str, expected: bool | None) -> None:
    gpu = g.parse_nvidia_smi_xml(_doc(MINIMAL_GPU.format(mig=mig, total="16384 MiB")))["gpus"][0]
    assert gpu["mig_enabled"] is expected
    if expected is None:
        assert gpu["usable_vram_mib"] is None


def test_pcie_v12_max_link_gen_is_lower_of_device_and_host() -> None:
    pci = """<pci><pci_bus_id>00000000:84:00.0</pci_bus_id><pci_gpu_link_info>
      <pcie_gen><max_link_gen>3</max_link_gen><current_link_gen>1</current_link_gen>
      <device_current_link_gen>1</device_current_link_gen>
      <max_device_link_gen>4</max_device_link_gen><max_host_link_gen>3</max_host_link_gen>
      </pcie_gen><link_widths><max_link_width>16x</max_link_width>
      <current_link_width>16x</current_link_width></link_widths></pci_gpu_link_info></pci>"""
    gpu = g.parse_nvidia_smi_xml(_doc(f"<gpu>{pci}</gpu>"))["gpus"][0]
    assert gpu["pcie_gen_max"] == 3
    assert gpu["pcie_gen_max_device"] == 4
    assert gpu["pcie_gen_max_host"] == 3
    assert gpu["pcie_gen_current"] == 1
    assert gpu["pci_bus_id"] == "0000:84:00.0"


def test_compute_capability_only_when_stated() -> None:
    stated = "<gpu><product_name>NVIDIA A100</product_name><compute_cap>8.0</compute_cap></gpu>"
    assert g.parse_nvidia_smi_xml(_doc(stated))["gpus"][0]["compute_capability"] == "8.0"
    unstated = "<gpu><product_name>NVIDIA A100-SXM4-40GB</product_name></gpu>"
    assert g.parse_nvidia_smi_xml(_doc(unstated))["gpus"][0]["compute_capability"] is None


@pytest.mark.parametrize(
    "junk",
    [
        "N/A",
        "[N/A]",
        "Not Supported",
        "[Not Supported]",
        "Unknown Error",
        "[Unknown Error]",
        "Requested functionality has been deprecated",
        "Not Found",
        "  n/a  ",
        "",
    ],
)
def test_junk_strings_are_not_values(junk: str) -> None:
    assert g.clean_value(junk) is None
    head = f"<driver_version>{junk}</driver_version><cuda_version>{junk}</cuda_version>"
    gpu = f"<gpu><product_name>{junk}</product_name><uuid>{junk}</uuid></gpu>"
    doc = g.parse_nvidia_smi_xml(_doc(gpu, head=head))
    assert doc["driver_version"] is None
    assert doc["cuda_version"] is None
    assert doc["gpus"][0]["name"] is None
    assert doc["gpus"][0]["uuid"] is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("40960 MiB", 40960),
        (" 7979 MiB ", 7979),
        ("7979MiB", 7979),
        ("80 GiB", 81920),
        ("4096", 4096),
        ("N/A", None),
        ("12.5 MiB", None),
        ("-1 MiB", None),
        (None, None),
    ],
)
def test_parse_mib(text: str | None, expected: int | None) -> None:
    assert g.parse_mib(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("16x", 16), ("8x", 8), (" 1x ", 1), ("16", 16), ("0x", None), ("N/A", None), ("wide", None)],
)
def test_parse_link_width(text: str, expected: int | None) -> None:
    assert g.parse_link_width(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00000000:84:00.0", "0000:84:00.0"),
        ("0000:00:03.0", "0000:00:03.0"),
        ("00000000:C1:00.0", "0000:c1:00.0"),
        ("00001580:00:00.0", "1580:00:00.0"),
        ("00010000:01:00.0", "10000:01:00.0"),
        ("not-a-bus-id", "not-a-bus-id"),
        ("N/A", None),
    ],
)
def test_normalize_pci_bus_id(text: str, expected: str | None) -> None:
    assert g.normalize_pci_bus_id(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("268410DE", "0x2684"), ("0x233010DE", "0x2330"), ("2684", None), ("N/A", None)],
)
def test_pci_device_id_from_smi(text: str, expected: str | None) -> None:
    assert g.pci_device_id_from_smi(text) == expected


# ---------------------------------------------------------------------------
# Tier rule
# ---------------------------------------------------------------------------

SHUFFLED_TIERS = [
    {"name": "pro", "vram_gib": 16},
    {"name": "base", "vram_gib": 4},
    {"name": "enterprise", "vram_gib": 32},
    {"name": "standard", "vram_gib": 8},
]


@pytest.mark.parametrize(
    ("usable", "expected"),
    [
        (15360, "pro"),  # T4
        (7979, "standard"),  # an 8 GB card
        (1998, "cpu"),  # a 2 GB card
        (0, "cpu"),
        (3686, "cpu"),  # just under 90 % of 4 GiB (3686.4)
        (3687, "base"),
        (14745, "standard"),  # just under 90 % of 16 GiB (14745.6)
        (14746, "pro"),
        (29492, "enterprise"),  # 90 % of 32 GiB is 29491.2
        (81920, "enterprise"),
    ],
)
def test_tier_for_vram(usable: int, expected: str) -> None:
    assert g.tier_for_vram(usable, g.DEFAULT_TIERS) == expected
    assert g.tier_for_vram(usable, SHUFFLED_TIERS) == expected


@pytest.mark.parametrize(
    ("source", "usable", "expected"),
    [
        ("nvidia-smi", 15360, "pro"),
        ("nvidia-smi", 0, "cpu"),
        ("nvidia-smi", None, None),
        ("pci", None, None),
        ("none", 0, "cpu"),
        ("none", None, "cpu"),
    ],
)
def test_decide_tier(source: str, usable: int | None, expected: str | None) -> None:
    assert g.decide_tier(source, usable, g.DEFAULT_TIERS) == expected


def test_custom_tier_table() -> None:
    tiers = g.validate_tiers(
        [{"name": "large", "vram_gib": 24, "model": "qwen-14b"}, {"name": "small", "vram_gib": "6"}]
    )
    assert tiers == [{"name": "large", "vram_gib": 24.0}, {"name": "small", "vram_gib": 6.0}]
    assert g.tier_for_vram(22200, tiers) == "large"
    assert g.tier_for_vram(12000, tiers) == "small"
    assert g.tier_for_vram(5000, tiers) == "cpu"


def test_validate_tiers_defaults_and_empty() -> None:
    assert [t["name"] for t in g.validate_tiers(None)] == ["base", "standard", "pro", "enterprise"]
    assert g.validate_tiers([]) == []
    assert g.tier_for_vram(81920, []) == "cpu"


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([{"name": "", "vram_gib": 4}], r"tiers\[0\].*non-empty"),
        ([{"vram_gib": 4}], r"tiers\[0\].*non-empty"),
        ([{"name": "base", "vram_gib": 4}, {"name": "x", "vram_gib": 0}], r"tiers\[1\].*positive"),
        ([{"name": "x", "vram_gib": -8}], r"tiers\[0\].*positive"),
        ([{"name": "x", "vram_gib": True}], r"tiers\[0\].*positive"),
        ([{"name": "x", "vram_gib": "lots"}], r"tiers\[0\].*positive"),
        ([{"name": "x"}], r"tiers\[0\].*positive"),
        ([{"name": "cpu", "vram_gib": 2}], r"tiers\[0\].*fallback"),
        ([{"name": "CPU", "vram_gib": 2}], r"tiers\[0\].*fallback"),
        (
            [
                {"name": "a", "vram_gib": 4},
                {"name": "b", "vram_gib": 8},
                {"name": "a", "vram_gib": 9},
            ],
            r"tiers\[2\].*'a' repeats tiers\[0\]",
        ),
        ([{"name": "a", "vram_gib": 8}, {"name": "b", "vram_gib": 8.0}], r"tiers\[1\].*repeats"),
        (["base"], r"tiers\[0\].*mapping"),
    ],
)
def test_validate_tiers_rejects(tiers: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        g.validate_tiers(tiers)


# ---------------------------------------------------------------------------
# sysfs / procfs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.5 GT/s PCIe", 1),
        ("5.0 GT/s PCIe", 2),
        ("8.0 GT/s PCIe", 3),
        ("16.0 GT/s PCIe", 4),
        ("32.0 GT/s PCIe", 5),
        ("64.0 GT/s PCIe", 6),
        ("2.5 GT/s", 1),  # kernels before 4.17 wrote no "PCIe"
        ("5 GT/s", 2),
        ("8 GT/s", 3),
        ("Unknown", None),
        ("Unknown speed", None),
        ("128.0 GT/s PCIe", None),  # not in the table: not guessed
        ("", None),
        (None, None),
    ],
)
def test_pcie_gen_from_speed(text: str | None, expected: int | None) -> None:
    assert g.pcie_gen_from_speed(text) == expected


def test_scan_pci(fake_sysfs: Path) -> None:
    scan = g.scan_pci(str(fake_sysfs))
    assert scan is not None
    assert scan["nvswitch_count"] == 2
    first, second = scan["gpus"]
    assert first == {
        "index": 0,
        "name": None,
        "uuid": None,
        "pci_bus_id": "0000:01:00.0",
        "pci_device_id": "0x2504",
        "memory_total_mib": None,
        "mig_enabled": None,
        "mig_instances_mib": [],
        "usable_vram_mib": None,
        "pcie_gen_max": 4,
        "pcie_gen_max_device": None,
        "pcie_gen_max_host": None,
        "pcie_gen_current": 1,
        "pcie_width_max": 16,
        "pcie_width_current": 16,
        "compute_capability": None,
    }
    assert second["index"] == 1
    assert second["pci_bus_id"] == "0000:41:00.0"
    assert second["pci_device_id"] == "0x20b0"
    assert (second["pcie_gen_max"], second["pcie_gen_current"]) == (4, 3)
    assert (second["pcie_width_max"], second["pcie_width_current"]) == (16, 8)


def test_scan_pci_missing_link_files_and_unknown_speed(make_sysfs: Any) -> None:
    root = make_sysfs(
        devices={
            "0000:65:00.0": {
                "vendor": "0x10de",
                "class": "0x030000",
                "max_link_speed": "Unknown",
                "current_link_width": "0",
            }
        }
    )
    (gpu,) = g.scan_pci(str(root))["gpus"]
    assert gpu["pci_device_id"] is None
    assert gpu["pcie_gen_max"] is None
    assert gpu["pcie_gen_current"] is None
    assert gpu["pcie_width_current"] is None


def test_scan_pci_absent_and_empty(tmp_path: Path, make_sysfs: Any) -> None:
    assert g.scan_pci(str(tmp_path / "nowhere")) is None
    assert g.scan_pci(str(make_sysfs(devices={}))) == {"gpus": [], "nvswitch_count": 0}


def test_numa_nodes(fake_sysfs: Path, tmp_path: Path, make_sysfs: Any) -> None:
    assert g.count_numa_nodes(str(fake_sysfs)) == 2
    assert g.count_numa_nodes(str(tmp_path / "nowhere")) is None
    assert g.count_numa_nodes(str(make_sysfs(numa_nodes=None))) is None


def test_nvidia_module(make_sysfs: Any, fake_sysfs: Path) -> None:
    assert g.read_nvidia_module(str(fake_sysfs)) == (False, None)
    loaded = make_sysfs(nvidia_module_version="535.161.07")
    assert g.read_nvidia_module(str(loaded)) == (True, "535.161.07")


def test_meminfo(fake_proc: Path, tmp_path: Path) -> None:
    assert g.read_meminfo_total_mib(str(fake_proc)) == 64000
    assert g.read_meminfo_total_mib(str(tmp_path / "nowhere")) is None
    assert g.parse_meminfo_total_mib("MemFree: 1 kB\n") is None
    assert g.parse_meminfo_total_mib("MemTotal: lots kB\n") is None


def test_cpu_core_count() -> None:
    count = g.cpu_core_count()
    assert isinstance(count, int)
    assert count >= 1


@pytest.mark.parametrize(
    ("output", "caps"),
    [
        (
            "00000000:01:00.0, 8.6\n00000000:41:00.0, 9.0\n",
            {"0000:01:00.0": "8.6", "0000:41:00.0": "9.0"},
        ),
        ("00000001:00:00.0, 7.5", {"0001:00:00.0": "7.5"}),
        ("00000000:01:00.0, [N/A]\n", {}),
        ('Field "compute_cap" is not a valid field to query.\n', {}),
        ("", {}),
    ],
)
def test_parse_compute_caps_csv(output: str, caps: dict[str, str]) -> None:
    assert g.parse_compute_caps_csv(output) == caps


def test_merge_compute_caps_fills_only_missing_values() -> None:
    smi = {
        "gpus": [
            {"pci_bus_id": "0000:01:00.0", "compute_capability": None},
            {"pci_bus_id": "0000:02:00.0", "compute_capability": "8.0"},
            {"pci_bus_id": "0000:03:00.0", "compute_capability": None},
        ]
    }
    g.merge_compute_caps(smi, {"0000:01:00.0": "8.6", "0000:02:00.0": "9.9"})
    assert [gpu["compute_capability"] for gpu in smi["gpus"]] == ["8.6", "8.0", None]


# ---------------------------------------------------------------------------
# Bad inputs at the level of the pure functions (the module-level cases are in
# test_gpu_facts_bad_inputs.py)
# ---------------------------------------------------------------------------


def test_read_regular_file(tmp_path: Path) -> None:
    regular = tmp_path / "vendor"
    regular.write_text(" 0x10de \n")
    assert g.read_regular_file(str(regular)) == "0x10de"
    assert g.read_regular_file(str(tmp_path / "absent")) is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(g.UnreadableFile, match=r"fifo is not a regular file \(a FIFO\)"):
        g.read_regular_file(str(fifo))
    big = tmp_path / "big"
    big.write_bytes(b"x" * 4097)
    with pytest.raises(g.UnreadableFile, match="larger than 4096 bytes"):
        g.read_regular_file(str(big))
    assert g.read_regular_file(str(big), limit=8192) == "x" * 4097
    assert g.read_small_file(str(fifo)) is None  # the lenient reader never blocks either


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (g.plausible_mib, "16777216 MiB", 16 * 1024 * 1024),
        (g.plausible_mib, "16777217 MiB", None),
        (g.plausible_mib, "16 TiB", 16 * 1024 * 1024),
        (g.plausible_mib, "0 MiB", None),
        (g.plausible_pcie_gen, "6", 6),
        (g.plausible_pcie_gen, "7", None),
        (g.plausible_pcie_gen, "0", None),
        (g.plausible_link_width, "12x", 12),
        (g.plausible_link_width, "3x", None),
        (g.plausible_link_width, "64x", None),
        (g.plausible_gpu_count, "0", 0),
        (g.plausible_gpu_count, "1025", None),
        (g.parse_compute_capability, "12.0", "12.0"),
        (g.parse_compute_capability, "100.0", None),
        (g.parse_compute_capability, "8.10", None),
    ],
)
def test_plausibility_bounds(parse: Any, text: str, expected: Any) -> None:
    assert parse(text) == expected


def test_checked_value_names_field_and_value() -> None:
    problems: list[str] = []
    assert g.checked_value(problems, "here", "f", "N/A", g.plausible_mib, "x") is None
    assert problems == []  # not a value: quietly null
    assert g.checked_value(problems, "here", "f", "-3 MiB", g.plausible_mib, "a size") is None
    assert problems == ["here: f '-3 MiB' is not a size"]


def test_decide_tier_undecided_with_any_problem() -> None:
    assert g.decide_tier("nvidia-smi", 81920, g.DEFAULT_TIERS, ["x"]) is None
    assert g.decide_tier("none", 0, g.DEFAULT_TIERS, ["x"]) is None
    assert g.decide_tier("none", 0, g.DEFAULT_TIERS, []) == "cpu"


def test_validate_tiers_rejects_thresholds_that_tie_in_mib() -> None:
    # Different in GiB, the same once 90 % of it is rounded up to a MiB.
    with pytest.raises(ValueError, match=r"tiers\[1\].*both need 14746 MiB"):
        g.validate_tiers([{"name": "a", "vram_gib": 16}, {"name": "b", "vram_gib": 16.0001}])
    assert g.validate_tiers([{"name": "a", "vram_gib": g.MAX_TIER_VRAM_GIB}])
    with pytest.raises(ValueError, match=r"tiers\[0\].*vram_gib"):
        g.validate_tiers([{"name": "a", "vram_gib": g.MAX_TIER_VRAM_GIB + 1}])


def test_parse_compute_caps_csv_conflicting_lines() -> None:
    problems: list[str] = []
    output = "00000000:01:00.0, 8.6\n00000000:01:00.0, 8.6\n00000000:02:00.0, 8.0\n"
    output += "00000000:02:00.0, 9.0\n00000000:03:00.0, 999.0\n"
    assert g.parse_compute_caps_csv(output, problems) == {"0000:01:00.0": "8.6"}
    assert len(problems) == 2
    assert "line 4: pci.bus_id 0000:02:00.0 is listed again" in problems[0]
    assert "line 5: compute_cap '999.0' is not a compute capability" in problems[1]


def test_inline_dtd_without_entities_is_still_read() -> None:
    data = (
        '<?xml version="1.0"?><!DOCTYPE nvidia_smi_log [<!ELEMENT nvidia_smi_log ANY>'
        '<!ATTLIST gpu id CDATA "">]>' + _doc(MINIMAL_GPU.format(mig="", total="2048 MiB"))
    )
    assert g.parse_nvidia_smi_xml(data)["gpus"][0]["memory_total_mib"] == 2048
    assert g.parse_nvidia_smi_xml(data)["problems"] == []


def test_text_that_cannot_be_utf8_is_a_reason_not_a_traceback() -> None:
    with pytest.raises(ValueError, match="not text"):
        g.parse_nvidia_smi_xml("<nvidia_smi_log>\ud800</nvidia_smi_log>")
