"""Pure parsing and decision functions behind the ``gpu_facts`` module.

Nothing here imports Ansible, so the same code runs in unit tests, in the module
on a target host (shipped by AnsiballZ from ``plugins/module_utils``), and in any
tool that wants to read a ``nvidia-smi -q -x`` document.

The only I/O is a handful of small readers of sysfs/procfs files; each takes the
root directory as an argument so tests can point it at a fake tree.

Rule for every value: what the source says, normalised; ``None`` when the source
does not say or says something that is not a value ("N/A", "Not Supported",
"[Unknown Error]" ...). Nothing is guessed from product names.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

#: Default tier table: the VRAM class (GiB) a host must reach, at 90 %.
DEFAULT_TIERS: tuple[dict[str, Any], ...] = (
    {"name": "base", "vram_gib": 4},
    {"name": "standard", "vram_gib": 8},
    {"name": "pro", "vram_gib": 16},
    {"name": "enterprise", "vram_gib": 32},
)
#: Tier of a host with no usable GPU; reserved, so no table entry may use it.
CPU_TIER = "cpu"
#: A host reaches a class when its usable VRAM is at least this share of it
#: (cards report less than their marketing size: ECC, driver reserve).
TIER_VRAM_SHARE = 0.9

SOURCE_NVIDIA_SMI = "nvidia-smi"
SOURCE_PCI = "pci"
SOURCE_NONE = "none"

NVIDIA_PCI_VENDOR = "0x10de"
#: PCI classes of a GPU: VGA compatible controller, 3D controller.
GPU_PCI_CLASS_PREFIXES = ("0x0300", "0x0302")
#: PCI class of an NVSwitch (bridge, "other"); counted, never taken for a GPU.
NVSWITCH_PCI_CLASS_PREFIX = "0x0680"

#: Strings nvidia-smi prints where it has no value (compared case-insensitively,
#: with surrounding brackets removed: "[N/A]", "[Unknown Error]" ...).
NOT_A_VALUE = frozenset(
    s.casefold()
    for s in (
        "",
        "N/A",
        "NA",
        "Not Supported",
        "Not Found",
        "Not Available",
        "Unknown",
        "Unknown Error",
        "Insufficient Permissions",
        "GPU requires reset",
        "GPU is lost",
        "Requested functionality has been deprecated",
    )
)
#: ``current_mig`` values meaning "this GPU cannot do MIG", hence MIG is off.
_MIG_UNSUPPORTED = frozenset(s.casefold() for s in ("N/A", "Not Supported"))

#: PCIe transfer rate (GT/s, as sysfs writes it) to generation.
_GTS_TO_GEN = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}

_INT_RE = re.compile(r"^\+?(\d+)$")
_MEM_RE = re.compile(r"^(\d+)\s*(KiB|MiB|GiB|TiB)?$", re.IGNORECASE)
_MEM_FACTOR = {"kib": 1 / 1024, "mib": 1, "gib": 1024, "tib": 1024 * 1024}
_WIDTH_RE = re.compile(r"^(?:x\s*)?(\d+)\s*(?:x)?$", re.IGNORECASE)
_GTS_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*GT/s\b", re.IGNORECASE)
_BUS_ID_RE = re.compile(
    r"^(?P<domain>[0-9a-f]{1,8}):(?P<bus>[0-9a-f]{1,2}):(?P<dev>[0-9a-f]{1,2})\.(?P<fn>[0-7])$",
    re.IGNORECASE,
)
_PCI_DEVICE_ID_RE = re.compile(r"^(?:0x)?([0-9a-f]{4})([0-9a-f]{4})$", re.IGNORECASE)
_CC_RE = re.compile(r"^\d+\.\d+$")
_NUMA_NODE_RE = re.compile(r"^node\d+$")


# ---------------------------------------------------------------------------
# Scalar helpers
# ---------------------------------------------------------------------------


def clean_value(text: str | None) -> str | None:
    """Return ``text`` stripped and with whitespace runs collapsed, or ``None``
    when it is one of nvidia-smi's non-values ("N/A", "[Not Supported]" ...)."""
    if text is None:
        return None
    value = " ".join(text.split())
    inner = value[1:-1].strip() if value.startswith("[") and value.endswith("]") else value
    if inner.casefold() in NOT_A_VALUE:
        return None
    return value


def element_text(parent: ET.Element | None, path: str) -> str | None:
    """Cleaned text of ``parent.find(path)`` (a path relative to ``parent``)."""
    if parent is None:
        return None
    child = parent.find(path)
    if child is None:
        return None
    return clean_value(child.text)


def parse_int(text: str | None) -> int | None:
    """A non-negative integer, else ``None``."""
    value = clean_value(text)
    if value is None:
        return None
    match = _INT_RE.match(value)
    return int(match.group(1)) if match else None


def parse_positive_int(text: str | None) -> int | None:
    value = parse_int(text)
    return value if value is not None and value > 0 else None


def parse_mib(text: str | None) -> int | None:
    """``"40960 MiB"`` (or ``" 7979 MiB "``, ``"40 GiB"``) to an int of MiB."""
    value = clean_value(text)
    if value is None:
        return None
    match = _MEM_RE.match(value)
    if not match:
        return None
    factor = _MEM_FACTOR[(match.group(2) or "MiB").casefold()]
    return int(int(match.group(1)) * factor)


def parse_link_width(text: str | None) -> int | None:
    """``"16x"`` (nvidia-smi) or ``"16"`` (sysfs) to 16; 0 or junk to ``None``."""
    value = clean_value(text)
    if value is None:
        return None
    match = _WIDTH_RE.match(value)
    if not match:
        return None
    width = int(match.group(1))
    return width if width > 0 else None


def pcie_gen_from_speed(text: str | None) -> int | None:
    """sysfs ``*_link_speed`` (``"16.0 GT/s PCIe"``, ``"5 GT/s"``) to a PCIe
    generation; ``"Unknown"`` or any rate not in the table gives ``None``."""
    value = clean_value(text)
    if value is None:
        return None
    match = _GTS_RE.match(value)
    if not match:
        return None
    return _GTS_TO_GEN.get(float(match.group(1)))


def normalize_pci_bus_id(text: str | None) -> str | None:
    """Bus id in the Linux form ``dddd:bb:dd.f`` (lower case), the name the
    device has under ``/sys/bus/pci/devices``. nvidia-smi writes an 8-digit
    domain (``00000000:84:00.0``), old drivers 4 digits; both become
    ``0000:84:00.0``. A value in any other shape is returned as written."""
    value = clean_value(text)
    if value is None:
        return None
    match = _BUS_ID_RE.match(value)
    if not match:
        return value
    return "{:04x}:{:02x}:{:02x}.{}".format(
        int(match.group("domain"), 16),
        int(match.group("bus"), 16),
        int(match.group("dev"), 16),
        match.group("fn"),
    )


def pci_device_id_from_smi(text: str | None) -> str | None:
    """nvidia-smi's ``pci_device_id`` (device and vendor, ``268410DE``) to the
    device id as sysfs writes it (``0x2684``)."""
    value = clean_value(text)
    if value is None:
        return None
    match = _PCI_DEVICE_ID_RE.match(value)
    return f"0x{match.group(1).lower()}" if match else None


def parse_compute_capability(text: str | None) -> str | None:
    value = clean_value(text)
    return value if value is not None and _CC_RE.match(value) else None


#: The one query that adds what ``-q -x`` lacks: the compute capability (driver 510+).
COMPUTE_CAP_QUERY = ("--query-gpu=pci.bus_id,compute_cap", "--format=csv,noheader")


def parse_compute_caps_csv(data: bytes | str) -> dict[str, str]:
    """``--query-gpu=pci.bus_id,compute_cap --format=csv,noheader`` output to
    ``{bus id (sysfs form): "8.6"}``. Lines that do not read as a bus id and a
    capability (an error message, "[N/A]") are left out."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    caps: dict[str, str] = {}
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 2:
            continue
        bus_id = normalize_pci_bus_id(parts[0])
        capability = parse_compute_capability(parts[1])
        if bus_id and _BUS_ID_RE.match(bus_id) and capability:
            caps[bus_id] = capability
    return caps


def merge_compute_caps(smi: dict[str, Any], caps: Mapping[str, str]) -> None:
    """Fill each GPU's missing compute capability from ``caps`` (by bus id)."""
    for gpu in smi["gpus"]:
        if gpu.get("compute_capability") is None and gpu.get("pci_bus_id") in caps:
            gpu["compute_capability"] = caps[gpu["pci_bus_id"]]


# ---------------------------------------------------------------------------
# nvidia-smi -q -x
# ---------------------------------------------------------------------------


_XML_DECL_RE = re.compile(r"^\s*<\?xml[^>]*\?>")


def _as_utf8(raw: bytes) -> bytes:
    """UTF-16/32 with a byte-order mark (a capture saved by Windows PowerShell)
    re-encoded as UTF-8, its XML declaration (which names the old encoding)
    dropped. Anything else is returned unchanged, less a UTF-8 BOM."""
    for bom, codec in (
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if raw.startswith(bom):
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError:
                return raw
            return _XML_DECL_RE.sub("", text, count=1).encode("utf-8")
    return raw.removeprefix(b"\xef\xbb\xbf")


def _trim_document(data: bytes | str) -> bytes:
    """Bytes from the first markup to the end of the (first) root element.

    nvidia-smi prints some warnings ("WARNING: infoROM is corrupted at gpu ...")
    on stdout ahead of the document, and a shell wrapper may add a trailing line;
    neither should cost us the whole document.
    """
    if isinstance(data, str):
        # Re-encoded as UTF-8, so a declaration naming another encoding must go.
        raw = _XML_DECL_RE.sub("", data, count=1).encode("utf-8")
    else:
        raw = _as_utf8(bytes(data))
    body = raw.lstrip(b" \t\r\n")
    if not body:
        raise ValueError("nvidia-smi printed no output")
    if not body.startswith(b"<"):
        starts = [i for i in (body.find(b"<?xml"), body.find(b"<nvidia_smi_log")) if i >= 0]
        if not starts:
            raise ValueError("nvidia-smi output is not XML (no <nvidia_smi_log> element)")
        body = body[min(starts) :]
    end = body.find(b"</nvidia_smi_log>")
    if end >= 0:
        body = body[: end + len(b"</nvidia_smi_log>")]
    return body


def parse_xml_root(data: bytes | str) -> ET.Element:
    """Parse a ``nvidia-smi -q -x`` document and return its root element.

    Raises ``ValueError`` with a readable reason for empty output, output that is
    not XML, and XML whose root is not ``<nvidia_smi_log>``. An inline DTD
    (internal subset, as old drivers of the 352 branch wrote) is read by expat;
    an external ``SYSTEM "nvsmi_device_vNN.dtd"`` is never fetched (expat
    resolves no external entities unless told to).
    """
    body = _trim_document(data)
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValueError(f"nvidia-smi output is not well-formed XML: {exc}") from None
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"nvidia-smi output has root <{root.tag}>, expected <nvidia_smi_log>")
    return root


def parse_mig_enabled(gpu: ET.Element) -> bool | None:
    """MIG state of one ``<gpu>``.

    * ``current_mig`` "Enabled"/"Disabled": True/False.
    * "N/A" or "Not Supported": the GPU cannot partition, so MIG is off: False.
    * no ``<mig_mode>`` at all: drivers before R450 do not write it, and MIG
      needs R450 or later, so MIG cannot be on: False. (A hand-trimmed document
      reads the same way.)
    * anything else ("Unknown Error", empty): cannot be read: None.
    """
    mig_mode = gpu.find("mig_mode")
    if mig_mode is None:
        return False
    current = mig_mode.find("current_mig")
    if current is None:
        return False
    raw = " ".join((current.text or "").split())
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1].strip()
    folded = raw.casefold()
    if folded == "enabled":
        return True
    if folded == "disabled" or folded in _MIG_UNSUPPORTED:
        return False
    return None


def _direct_fb_total(parent: ET.Element) -> int | None:
    """``fb_memory_usage/total`` of ``parent`` itself (direct child only).

    A document-wide ``.//fb_memory_usage`` would hit a MIG slice first: each
    ``<mig_device>`` carries its own block earlier in document order.
    """
    for tag in ("fb_memory_usage", "shared_fb_memory_usage"):
        block = parent.find(tag)
        if block is not None:
            return parse_mib(element_text(block, "total"))
    return None


def parse_mig_instances(gpu: ET.Element) -> tuple[list[int], bool]:
    """Memory of each MIG GPU instance of one ``<gpu>``, in document order.

    Compute instances that share a GPU instance (same ``gpu_instance_id``)
    share its memory and are listed once. Returns ``(sizes, complete)`` where
    ``complete`` is False when some instance's memory could not be read.
    """
    container = gpu.find("mig_devices")
    if container is None:
        return [], True
    sizes: list[int] = []
    complete = True
    seen: set[str] = set()
    for device in container.findall("mig_device"):
        instance_id = element_text(device, "gpu_instance_id")
        if instance_id is not None:
            if instance_id in seen:
                continue
            seen.add(instance_id)
        size = _direct_fb_total(device)
        if size is None:
            complete = False
        else:
            sizes.append(size)
    return sizes, complete


def gpu_usable_vram_mib(
    memory_total_mib: int | None,
    mig_enabled: bool | None,
    mig_instances_mib: Sequence[int],
    mig_instances_complete: bool = True,
) -> int | None:
    """VRAM one GPU offers to a single model: the whole card, or with MIG on
    its largest instance (0 with no instance). ``None`` when unknown."""
    if mig_enabled is None:
        return None
    if mig_enabled:
        if not mig_instances_complete:
            return None
        return max(mig_instances_mib, default=0)
    return memory_total_mib


def parse_gpu(gpu: ET.Element, index: int) -> dict[str, Any]:
    """One ``<gpu>`` element to the fact schema of a GPU."""
    link = gpu.find("pci/pci_gpu_link_info")
    memory_total = _direct_fb_total(gpu)
    mig_enabled = parse_mig_enabled(gpu)
    if mig_enabled:
        instances, complete = parse_mig_instances(gpu)
    else:
        instances, complete = [], True
    capability = None
    for tag in ("compute_cap", "compute_capability", "cuda_compute_capability"):
        capability = parse_compute_capability(element_text(gpu, tag))
        if capability is not None:
            break
    return {
        "index": index,
        "name": element_text(gpu, "product_name"),
        "uuid": element_text(gpu, "uuid"),
        "pci_bus_id": normalize_pci_bus_id(element_text(gpu, "pci/pci_bus_id") or gpu.get("id")),
        "pci_device_id": pci_device_id_from_smi(element_text(gpu, "pci/pci_device_id")),
        "memory_total_mib": memory_total,
        "mig_enabled": mig_enabled,
        "mig_instances_mib": instances,
        "usable_vram_mib": gpu_usable_vram_mib(memory_total, mig_enabled, instances, complete),
        "pcie_gen_max": parse_positive_int(element_text(link, "pcie_gen/max_link_gen")),
        "pcie_gen_max_device": parse_positive_int(
            element_text(link, "pcie_gen/max_device_link_gen")
        ),
        "pcie_gen_max_host": parse_positive_int(element_text(link, "pcie_gen/max_host_link_gen")),
        "pcie_gen_current": parse_positive_int(element_text(link, "pcie_gen/current_link_gen")),
        "pcie_width_max": parse_link_width(element_text(link, "link_widths/max_link_width")),
        "pcie_width_current": parse_link_width(
            element_text(link, "link_widths/current_link_width")
        ),
        "compute_capability": capability,
    }


def parse_nvidia_smi_xml(data: bytes | str) -> dict[str, Any]:
    """Parse ``nvidia-smi -q -x`` output.

    Returns ``driver_version``, ``cuda_version``, ``attached_gpus`` (what the
    document claims) and ``gpus`` (one entry per ``<gpu>`` element, in document
    order). Raises ``ValueError`` for output that is not such a document.
    """
    root = parse_xml_root(data)
    gpus = [parse_gpu(element, index) for index, element in enumerate(root.findall("gpu"))]
    return {
        "driver_version": element_text(root, "driver_version"),
        "cuda_version": element_text(root, "cuda_version"),
        "attached_gpus": parse_int(element_text(root, "attached_gpus")),
        "gpus": gpus,
    }


# ---------------------------------------------------------------------------
# sysfs / procfs readers (root path is an argument)
# ---------------------------------------------------------------------------


def read_small_file(path: str) -> str | None:
    """Stripped content of a small text file, ``None`` if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(4096).strip()
    except OSError:
        return None


def _is_gpu_class(pci_class: str | None) -> bool:
    return pci_class is not None and pci_class.lower().startswith(GPU_PCI_CLASS_PREFIXES)


def _is_nvswitch_class(pci_class: str | None) -> bool:
    return pci_class is not None and pci_class.lower().startswith(NVSWITCH_PCI_CLASS_PREFIX)


def pci_gpu_from_sysfs(device_dir: str, address: str, index: int) -> dict[str, Any]:
    """One NVIDIA GPU seen only on the PCI bus (no driver answering)."""

    def read(name: str) -> str | None:
        return read_small_file(os.path.join(device_dir, name))

    device_id = read("device")
    return {
        "index": index,
        "name": None,
        "uuid": None,
        "pci_bus_id": normalize_pci_bus_id(address),
        "pci_device_id": device_id.lower() if device_id else None,
        "memory_total_mib": None,
        "mig_enabled": None,
        "mig_instances_mib": [],
        "usable_vram_mib": None,
        "pcie_gen_max": pcie_gen_from_speed(read("max_link_speed")),
        "pcie_gen_max_device": None,
        "pcie_gen_max_host": None,
        "pcie_gen_current": pcie_gen_from_speed(read("current_link_speed")),
        "pcie_width_max": parse_link_width(read("max_link_width")),
        "pcie_width_current": parse_link_width(read("current_link_width")),
        "compute_capability": None,
    }


def scan_pci(sysfs_root: str) -> dict[str, Any] | None:
    """NVIDIA GPUs and NVSwitches under ``<sysfs_root>/bus/pci/devices``.

    Returns ``{"gpus": [...], "nvswitch_count": n}`` or ``None`` when the
    directory cannot be listed. GPUs are ordered by bus address.
    """
    devices_dir = os.path.join(sysfs_root, "bus", "pci", "devices")
    try:
        addresses = sorted(os.listdir(devices_dir))
    except OSError:
        return None
    gpus: list[dict[str, Any]] = []
    nvswitch_count = 0
    for address in addresses:
        device_dir = os.path.join(devices_dir, address)
        vendor = read_small_file(os.path.join(device_dir, "vendor"))
        if vendor is None or vendor.lower() != NVIDIA_PCI_VENDOR:
            continue
        pci_class = read_small_file(os.path.join(device_dir, "class"))
        if _is_gpu_class(pci_class):
            gpus.append(pci_gpu_from_sysfs(device_dir, address, len(gpus)))
        elif _is_nvswitch_class(pci_class):
            nvswitch_count += 1
    return {"gpus": gpus, "nvswitch_count": nvswitch_count}


def read_nvidia_module(sysfs_root: str) -> tuple[bool, str | None]:
    """Whether the ``nvidia`` kernel module is loaded, and its version."""
    module_dir = os.path.join(sysfs_root, "module", "nvidia")
    if not os.path.isdir(module_dir):
        return False, None
    return True, clean_value(read_small_file(os.path.join(module_dir, "version")))


def parse_meminfo_total_mib(text: str | None) -> int | None:
    """``MemTotal:  16318340 kB`` from /proc/meminfo content, in MiB."""
    if not text:
        return None
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.strip() != "MemTotal":
            continue
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            return None
        unit = parts[1].lower() if len(parts) > 1 else "kb"
        factor = {"kb": 1024, "mb": 1024 * 1024, "b": 1}.get(unit)
        if factor is None:
            return None
        return int(parts[0]) * factor // (1024 * 1024)
    return None


def read_meminfo_total_mib(proc_root: str) -> int | None:
    path = os.path.join(proc_root, "meminfo")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return parse_meminfo_total_mib(handle.read())
    except OSError:
        return None


def count_numa_nodes(sysfs_root: str) -> int | None:
    """Number of ``node<N>`` dirs in ``<sysfs_root>/devices/system/node``;
    ``None`` when the directory is absent (kernel without NUMA) or empty."""
    node_dir = os.path.join(sysfs_root, "devices", "system", "node")
    try:
        names = os.listdir(node_dir)
    except OSError:
        return None
    count = sum(1 for name in names if _NUMA_NODE_RE.match(name))
    return count or None


def cpu_core_count() -> int | None:
    """CPUs this process may run on (respects cgroup/affinity limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


# ---------------------------------------------------------------------------
# Tiers
# ---------------------------------------------------------------------------


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def validate_tiers(tiers: Iterable[Any] | None) -> list[dict[str, Any]]:
    """Check a tier table and return it as ``[{"name", "vram_gib"}]``.

    Each entry needs a non-empty ``name`` (not ``cpu``, the fallback tier) and a
    positive ``vram_gib``; names and thresholds are unique. Extra keys (a model
    name, say) are allowed and ignored. Raises ``ValueError`` naming the entry.
    """
    if tiers is None:
        return [dict(tier) for tier in DEFAULT_TIERS]
    checked: list[dict[str, Any]] = []
    names: dict[str, int] = {}
    thresholds: dict[float, int] = {}
    for position, entry in enumerate(tiers):
        where = f"tiers[{position}] ({entry!r})"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: each tier must be a mapping with name and vram_gib")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: name must be a non-empty string")
        name = name.strip()
        if name.casefold() == CPU_TIER:
            raise ValueError(f"{where}: '{CPU_TIER}' is the fallback tier and cannot be a name")
        vram_gib = _as_number(entry.get("vram_gib"))
        if vram_gib is None or not vram_gib > 0 or vram_gib == float("inf"):
            raise ValueError(f"{where}: vram_gib must be a positive number")
        if name in names:
            raise ValueError(f"{where}: name '{name}' repeats tiers[{names[name]}]")
        if vram_gib in thresholds:
            raise ValueError(
                f"{where}: vram_gib {entry.get('vram_gib')} repeats tiers[{thresholds[vram_gib]}]"
            )
        names[name] = position
        thresholds[vram_gib] = position
        checked.append({"name": name, "vram_gib": vram_gib})
    return checked


def host_usable_vram_mib(gpus: Sequence[Mapping[str, Any]]) -> int | None:
    """Sum of the GPUs' usable VRAM; ``None`` if any GPU's is unknown."""
    total = 0
    for gpu in gpus:
        usable = gpu.get("usable_vram_mib")
        if usable is None:
            return None
        total += int(usable)
    return total


def tier_min_vram_mib(vram_gib: float) -> int:
    """Usable VRAM (MiB) a tier's class needs: 90 % of it, rounded up (16 GiB: 14746)."""
    return math.ceil(TIER_VRAM_SHARE * float(vram_gib) * 1024)


def tier_thresholds_mib(tiers: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Usable VRAM each tier needs, ``cpu`` included (0), for checks of a pinned tier."""
    thresholds = {str(tier["name"]): tier_min_vram_mib(tier["vram_gib"]) for tier in tiers}
    thresholds[CPU_TIER] = 0
    return thresholds


def tier_for_vram(usable_vram_mib: int, tiers: Sequence[Mapping[str, Any]]) -> str:
    """Highest tier whose class is met at 90 %, else ``cpu``. Order-free."""
    for tier in sorted(tiers, key=lambda t: float(t["vram_gib"]), reverse=True):
        if usable_vram_mib >= tier_min_vram_mib(tier["vram_gib"]):
            return str(tier["name"])
    return CPU_TIER


def decide_tier(
    source: str, usable_vram_mib: int | None, tiers: Sequence[Mapping[str, Any]]
) -> str | None:
    """Tier of a host, or ``None`` while it cannot be decided.

    * ``none`` (no GPU anywhere): ``cpu``.
    * ``pci`` (GPUs seen but no driver answering): ``None`` until it does.
    * ``nvidia-smi``: by usable VRAM; ``None`` when some GPU's is unknown.
    """
    if source == SOURCE_NONE:
        return CPU_TIER
    if source != SOURCE_NVIDIA_SMI or usable_vram_mib is None:
        return None
    return tier_for_vram(usable_vram_mib, tiers)


# ---------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------


def build_hardware_facts(
    *,
    smi: Mapping[str, Any] | None,
    pci: Mapping[str, Any] | None,
    nvidia_module: tuple[bool, str | None],
    memory_total_mib: int | None,
    cpu_cores: int | None,
    numa_nodes: int | None,
) -> dict[str, Any]:
    """The ``llmfleet_hardware`` fact from what was read.

    ``smi`` is a parsed nvidia-smi document, or ``None`` when nvidia-smi did not
    answer; ``pci`` is :func:`scan_pci`'s result (``None``: sysfs unreadable).
    """
    nvswitch_count = pci["nvswitch_count"] if pci is not None else None
    module_loaded, module_version = nvidia_module
    if smi is not None:
        source = SOURCE_NVIDIA_SMI
        gpus = list(smi["gpus"])
        driver_loaded = True
        driver_version = smi.get("driver_version")
        cuda_version = smi.get("cuda_version")
        attached = smi.get("attached_gpus")
        usable = host_usable_vram_mib(gpus)
    else:
        gpus = list(pci["gpus"]) if pci is not None else []
        source = SOURCE_PCI if gpus else SOURCE_NONE
        driver_loaded = module_loaded
        driver_version = module_version
        cuda_version = None
        attached = None
        usable = None if gpus else 0
    return {
        "source": source,
        "driver_loaded": driver_loaded,
        "driver_version": driver_version,
        "cuda_version": cuda_version,
        "attached_gpus": attached,
        "gpu_count": len(gpus),
        "gpus": gpus,
        "usable_vram_mib": usable,
        "memory_total_mib": memory_total_mib,
        "cpu_cores": cpu_cores,
        "numa_nodes": numa_nodes,
        "nvswitch_count": nvswitch_count,
    }
