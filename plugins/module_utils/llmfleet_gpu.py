"""Pure parsing and decision functions behind the ``gpu_facts`` module.

Nothing here imports Ansible, so the same code runs in unit tests, in the module
on a target host (shipped by AnsiballZ from ``plugins/module_utils``), and in any
tool that wants to read a ``nvidia-smi -q -x`` document.

The only I/O is a handful of small readers of sysfs/procfs files; each takes the
root directory as an argument so tests can point it at a fake tree. They open
regular files only (never a FIFO or a device node, which could block forever), with
O_NONBLOCK and a size bound.

Rule for every value: what the source says, normalised; ``None`` when the source
does not say or says something that is not a value ("N/A", "Not Supported",
"[Unknown Error]" ...). Nothing is guessed from product names.

Rule for every bad input: a value that is present but cannot be used (a negative or
implausible number, an unreadable file, a repeated bus id) becomes ``None`` and a
*problem*: one sentence naming the input (the file, or the document field) that
the caller collects in a list passed as ``problems``. A host with any problem has
no tier (undecided), never a guessed one.
"""

from __future__ import annotations

import math
import os
import re
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from xml.parsers import expat

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

# Physical plausibility. A number from nvidia-smi outside these bounds is not a
# fact about hardware but a corrupt document, a broken driver or a hostile test
# double; it is rejected (null, with a problem), never clamped or believed.

#: Most memory one GPU can have, in MiB: 16 TiB. The largest boards shipping carry
#: 288 GB (B300, MI355X); 16 TiB is more than 50 times that, so no real card comes
#: near it, while a garbage value (10^20 MiB, a 64-bit counter read as a size) that
#: would make any host "enterprise" is caught.
MAX_GPU_VRAM_MIB = 16 * 1024 * 1024
#: Most GPUs one host can have: 1024. The densest machines today expose 8 to 16 GPUs
#: to one kernel (an NVL72 rack is 72 GPUs over 18 hosts); 1024 is far above any real
#: host and still small enough to expose a garbage count.
MAX_GPUS_PER_HOST = 1024
#: Highest PCIe generation any shipping device uses (6.0, 64 GT/s); raise it together
#: with the GT/s table below when devices of the next generation ship.
MAX_PCIE_GEN = 6
#: Link widths the PCIe specification defines.
PCIE_LINK_WIDTHS = frozenset({1, 2, 4, 8, 12, 16, 32})
#: Compute capabilities are "<major>.<minor>" with a one-digit minor; majors run
#: from 1 (Tesla, 2006) to 12 (Blackwell, 2025). Two digits leave decades of room.
MAX_COMPUTE_CAP_MAJOR = 99
#: Largest tier class (GiB) a table may name: all the VRAM the largest plausible
#: host could hold. A bigger class could never be reached, and 1e308 would
#: overflow the MiB arithmetic.
MAX_TIER_VRAM_GIB = MAX_GPUS_PER_HOST * MAX_GPU_VRAM_MIB // 1024

#: A sysfs attribute is at most one page.
SYSFS_READ_LIMIT = 4096
#: /proc/meminfo is about 1.5 KiB; 64 KiB leaves room for any kernel's.
PROC_READ_LIMIT = 64 * 1024

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
_CC_RE = re.compile(r"^(\d+)\.(\d+)$")
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
    """``"8.6"``; ``None`` for anything else, a major above two digits or a
    minor above one included."""
    value = clean_value(text)
    if value is None:
        return None
    match = _CC_RE.match(value)
    if not match:
        return None
    major, minor = int(match.group(1)), int(match.group(2))
    return value if 1 <= major <= MAX_COMPUTE_CAP_MAJOR and minor <= 9 else None


# ---------------------------------------------------------------------------
# Problems: present values that cannot be used, each named
# ---------------------------------------------------------------------------


def _note(problems: list[str] | None, text: str) -> None:
    if problems is not None:
        problems.append(text)


def _shown(value: Any, limit: int = 80) -> str:
    """``repr`` of a bad value, cut short: a reason must stay readable."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plausible_mib(text: str | None) -> int | None:
    """A memory size a GPU (or a MIG instance) can have: 1 MiB to 16 TiB."""
    value = parse_mib(text)
    return value if value is not None and 1 <= value <= MAX_GPU_VRAM_MIB else None


def plausible_pcie_gen(text: str | None) -> int | None:
    value = parse_int(text)
    return value if value is not None and 1 <= value <= MAX_PCIE_GEN else None


def plausible_link_width(text: str | None) -> int | None:
    value = parse_link_width(text)
    return value if value in PCIE_LINK_WIDTHS else None


def plausible_gpu_count(text: str | None) -> int | None:
    value = parse_int(text)
    return value if value is not None and value <= MAX_GPUS_PER_HOST else None


_EXPECTED_MIB = f"a memory size from 1 MiB to 16 TiB ({MAX_GPU_VRAM_MIB} MiB)"
_EXPECTED_GEN = f"a PCIe generation from 1 to {MAX_PCIE_GEN}"
_EXPECTED_WIDTH = "a PCIe link width (x1, x2, x4, x8, x12, x16 or x32)"
_EXPECTED_COUNT = f"a GPU count from 0 to {MAX_GPUS_PER_HOST}"
_EXPECTED_CC = f"a compute capability such as 8.6 (major 1 to {MAX_COMPUTE_CAP_MAJOR})"
_EXPECTED_DEVICE_ID = "a PCI device and vendor id such as 268410DE"


def checked_value(
    problems: list[str] | None,
    where: str,
    field: str,
    text: str | None,
    parse: Callable[[str | None], Any],
    expected: str,
) -> Any:
    """``parse(text)``, or ``None``. Not-a-value strings ("N/A" ...) are ``None``
    quietly; any other text that does not parse to a plausible value is ``None``
    with a problem naming ``where`` and ``field``."""
    value = clean_value(text)
    if value is None:
        return None
    parsed = parse(value)
    if parsed is None:
        _note(problems, f"{where}: {field} {_shown(value)} is not {expected}")
    return parsed


# ---------------------------------------------------------------------------
# --query-gpu=pci.bus_id,compute_cap
# ---------------------------------------------------------------------------

#: The one query that adds what ``-q -x`` lacks: the compute capability (driver 510+).
COMPUTE_CAP_QUERY = ("--query-gpu=pci.bus_id,compute_cap", "--format=csv,noheader")


def parse_compute_caps_csv(data: bytes | str, problems: list[str] | None = None) -> dict[str, str]:
    """``--query-gpu=pci.bus_id,compute_cap --format=csv,noheader`` output to
    ``{bus id (sysfs form): "8.6"}``. Lines that do not read as a bus id and a
    capability (an error message, "[N/A]") are left out. A bus id listed twice
    with different capabilities is left out too (which one is true is unknown),
    with a problem."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    caps: dict[str, str] = {}
    conflicting: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 2:
            continue
        bus_id = normalize_pci_bus_id(parts[0])
        if not bus_id or not _BUS_ID_RE.match(bus_id):
            continue
        where = f"nvidia-smi --query-gpu line {number}"
        capability = checked_value(
            problems, where, "compute_cap", parts[1], parse_compute_capability, _EXPECTED_CC
        )
        if capability is None:
            continue
        if bus_id in caps and caps[bus_id] != capability:
            _note(
                problems,
                f"{where}: pci.bus_id {bus_id} is listed again with compute_cap {capability} "
                f"(was {caps[bus_id]}); its compute capability is unknown",
            )
            conflicting.add(bus_id)
        caps.setdefault(bus_id, capability)
    return {bus_id: cap for bus_id, cap in caps.items() if bus_id not in conflicting}


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
        try:
            raw = _XML_DECL_RE.sub("", data, count=1).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"nvidia-smi output is not text: {exc.reason}") from None
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


class _Refused(Exception):
    """Raised from an expat handler: the document uses something we never accept."""


def _refuse_entity(name: str, *_: Any) -> None:
    raise _Refused(f"declares the entity {name!r}")


def _refuse_external(
    _context: str | None, _base: str | None, system_id: str | None, *_: Any
) -> None:
    raise _Refused(f"refers to the external entity {system_id!r}")


def _refuse_skipped(name: str, _is_parameter: bool) -> None:
    raise _Refused(f"refers to the undeclared entity {name!r}")


def _safe_tree(body: bytes) -> ET.Element:
    """The element tree of ``body``, built by expat with entities refused.

    XML safety with the standard library only (the module runs on target hosts,
    which get nothing but what Ansible ships; defusedxml is not there): the same
    rule as defusedxml's ``forbid_entities`` and ``forbid_external``. Any entity
    declaration (internal, external, parameter or unparsed) is an error at the
    moment it is declared, before anything could expand it, so a billion-laughs
    document costs nothing; external entities and DTDs are never resolved
    (parameter-entity parsing off, no resolver); a reference to an undeclared
    entity is an error instead of being skipped. An inline DTD without entities
    (element and attribute lists, as drivers of the 352 branch wrote) is fine.
    """
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_external
    parser.SkippedEntityHandler = _refuse_skipped
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise ValueError(f"nvidia-smi output is not well-formed XML: {exc}") from None
    except _Refused as exc:
        raise ValueError(f"nvidia-smi output {exc}; entities are refused") from None
    return builder.close()


def parse_xml_root(data: bytes | str) -> ET.Element:
    """Parse a ``nvidia-smi -q -x`` document and return its root element.

    Raises ``ValueError`` with a readable reason for empty output, output that is
    not XML, XML that declares or uses entities (see :func:`_safe_tree`), and XML
    whose root is not ``<nvidia_smi_log>``. An external
    ``SYSTEM "nvsmi_device_vNN.dtd"`` is never fetched.
    """
    root = _safe_tree(_trim_document(data))
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"nvidia-smi output has root <{root.tag[:60]}>, expected <nvidia_smi_log>")
    return root


def _current_mig_text(gpu: ET.Element) -> str | None:
    """``mig_mode/current_mig`` as written (spaces collapsed, brackets off)."""
    current = gpu.find("mig_mode/current_mig")
    if current is None:
        return None
    raw = " ".join((current.text or "").split())
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1].strip()
    return raw


def parse_mig_enabled(gpu: ET.Element) -> bool | None:
    """MIG state of one ``<gpu>``.

    * ``current_mig`` "Enabled"/"Disabled": True/False.
    * "N/A" or "Not Supported": the GPU cannot partition, so MIG is off: False.
    * no ``<mig_mode>`` at all: drivers before R450 do not write it, and MIG
      needs R450 or later, so MIG cannot be on: False. (A hand-trimmed document
      reads the same way.)
    * anything else ("Unknown Error", empty): cannot be read: None.
    """
    raw = _current_mig_text(gpu)
    if raw is None:
        return False
    folded = raw.casefold()
    if folded == "enabled":
        return True
    if folded == "disabled" or folded in _MIG_UNSUPPORTED:
        return False
    return None


def _fb_total_field(parent: ET.Element) -> tuple[str, str | None]:
    """``(field, text)`` of ``parent``'s own memory total (direct child only).

    A document-wide ``.//fb_memory_usage`` would hit a MIG slice first: each
    ``<mig_device>`` carries its own block earlier in document order.
    """
    for tag in ("fb_memory_usage", "shared_fb_memory_usage"):
        block = parent.find(tag)
        if block is not None:
            total = block.find("total")
            return f"{tag}/total", None if total is None else total.text
    return "fb_memory_usage/total", None


def _direct_fb_total(parent: ET.Element) -> int | None:
    return plausible_mib(_fb_total_field(parent)[1])


def parse_mig_instances(
    gpu: ET.Element,
    where: str = "nvidia-smi <gpu>",
    memory_total_mib: int | None = None,
    problems: list[str] | None = None,
) -> tuple[list[int], bool]:
    """Memory of each MIG GPU instance of one ``<gpu>``, in document order.

    Compute instances that share a GPU instance (same ``gpu_instance_id``)
    share its memory and are listed once. Returns ``(sizes, complete)`` where
    ``complete`` is False when some instance's memory could not be read, or is
    implausible (above 16 TiB, or larger than its GPU's ``memory_total_mib``).
    """
    container = gpu.find("mig_devices")
    if container is None:
        return [], True
    sizes: list[int] = []
    complete = True
    seen: set[str] = set()
    for position, device in enumerate(container.findall("mig_device")):
        instance_id = element_text(device, "gpu_instance_id")
        if instance_id is not None:
            if instance_id in seen:
                continue
            seen.add(instance_id)
        here = f"{where} mig_device {position}"
        field, text = _fb_total_field(device)
        size = checked_value(problems, here, field, text, plausible_mib, _EXPECTED_MIB)
        if size is None:
            complete = False
            if clean_value(text) is None:
                _note(problems, f"{here}: {field} is not reported; its memory is unknown")
        elif memory_total_mib is not None and size > memory_total_mib:
            complete = False
            _note(
                problems,
                f"{here}: {field} {size} MiB is larger than the whole GPU ({memory_total_mib} MiB)",
            )
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


def parse_gpu(gpu: ET.Element, index: int, problems: list[str] | None = None) -> dict[str, Any]:
    """One ``<gpu>`` element to the fact schema of a GPU.

    Every value that is present but implausible is null and adds a problem to
    ``problems``; so does a GPU whose usable VRAM is unknown, with the reason.
    """
    found: list[str] = []
    bus_id = normalize_pci_bus_id(element_text(gpu, "pci/pci_bus_id") or gpu.get("id"))
    where = f"nvidia-smi <gpu> {index}" + (f" ({bus_id})" if bus_id else "")

    def number(field: str, parse: Callable[[str | None], Any], expected: str) -> Any:
        return checked_value(found, where, field, element_text(gpu, field), parse, expected)

    fb_field, fb_text = _fb_total_field(gpu)
    memory_total = checked_value(found, where, fb_field, fb_text, plausible_mib, _EXPECTED_MIB)
    mig_enabled = parse_mig_enabled(gpu)
    if mig_enabled is None:
        found.append(
            f"{where}: mig_mode/current_mig {_shown(_current_mig_text(gpu))} "
            "is neither Enabled nor Disabled"
        )
    if mig_enabled:
        instances, complete = parse_mig_instances(gpu, where, memory_total, found)
    else:
        instances, complete = [], True
    capability = None
    for tag in ("compute_cap", "compute_capability", "cuda_compute_capability"):
        capability = number(tag, parse_compute_capability, _EXPECTED_CC)
        if capability is not None:
            break
    usable = gpu_usable_vram_mib(memory_total, mig_enabled, instances, complete)
    if usable is None and not found:
        found.append(f"{where}: {fb_field} is not reported; its usable VRAM is unknown")
    link = "pci/pci_gpu_link_info/"
    parsed = {
        "index": index,
        "name": element_text(gpu, "product_name"),
        "uuid": element_text(gpu, "uuid"),
        "pci_bus_id": bus_id,
        "pci_device_id": number("pci/pci_device_id", pci_device_id_from_smi, _EXPECTED_DEVICE_ID),
        "memory_total_mib": memory_total,
        "mig_enabled": mig_enabled,
        "mig_instances_mib": instances,
        "usable_vram_mib": usable,
        "pcie_gen_max": number(f"{link}pcie_gen/max_link_gen", plausible_pcie_gen, _EXPECTED_GEN),
        "pcie_gen_max_device": number(
            f"{link}pcie_gen/max_device_link_gen", plausible_pcie_gen, _EXPECTED_GEN
        ),
        "pcie_gen_max_host": number(
            f"{link}pcie_gen/max_host_link_gen", plausible_pcie_gen, _EXPECTED_GEN
        ),
        "pcie_gen_current": number(
            f"{link}pcie_gen/current_link_gen", plausible_pcie_gen, _EXPECTED_GEN
        ),
        "pcie_width_max": number(
            f"{link}link_widths/max_link_width", plausible_link_width, _EXPECTED_WIDTH
        ),
        "pcie_width_current": number(
            f"{link}link_widths/current_link_width", plausible_link_width, _EXPECTED_WIDTH
        ),
        "compute_capability": capability,
    }
    if problems is not None:
        problems.extend(found)
    return parsed


def parse_nvidia_smi_xml(data: bytes | str) -> dict[str, Any]:
    """Parse ``nvidia-smi -q -x`` output.

    Returns ``driver_version``, ``cuda_version``, ``attached_gpus`` (what the
    document claims), ``gpus`` (one entry per ``<gpu>`` element, in document
    order; a ``<gpu>`` repeating an earlier one's bus id is counted once) and
    ``problems`` (each implausible value or repeated bus id, named). Raises
    ``ValueError`` for output that is not such a document.
    """
    root = parse_xml_root(data)
    problems: list[str] = []
    attached = checked_value(
        problems,
        "nvidia-smi",
        "attached_gpus",
        element_text(root, "attached_gpus"),
        plausible_gpu_count,
        _EXPECTED_COUNT,
    )
    elements = root.findall("gpu")
    if len(elements) > MAX_GPUS_PER_HOST:
        problems.append(
            f"nvidia-smi lists {len(elements)} <gpu> elements, more than the "
            f"{MAX_GPUS_PER_HOST} one host can have"
        )
    gpus: list[dict[str, Any]] = []
    first_seen: dict[str, int] = {}
    for position, element in enumerate(elements):
        gpu = parse_gpu(element, position, problems)
        bus_id = gpu["pci_bus_id"]
        if bus_id is not None and bus_id in first_seen:
            problems.append(
                f"nvidia-smi <gpu> {position}: pci_bus_id {bus_id} repeats <gpu> "
                f"{first_seen[bus_id]}; counted once"
            )
            continue
        if bus_id is not None:
            first_seen[bus_id] = position
        gpu["index"] = len(gpus)
        gpus.append(gpu)
    return {
        "driver_version": element_text(root, "driver_version"),
        "cuda_version": element_text(root, "cuda_version"),
        "attached_gpus": attached,
        "gpus": gpus,
        "problems": problems,
    }


# ---------------------------------------------------------------------------
# sysfs / procfs readers (root path is an argument)
# ---------------------------------------------------------------------------


class UnreadableFile(Exception):
    """A file that exists but cannot be read as a small regular file (the message
    names the path and why)."""


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _not_regular(path: str, mode: int) -> UnreadableFile:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a plain file")
    return UnreadableFile(f"{path} is not a regular file ({kind})")


def read_regular_file(path: str, limit: int = SYSFS_READ_LIMIT) -> str | None:
    """Text of the regular file ``path`` (stripped), ``None`` when it does not exist.

    Only a regular file is opened (``os.stat`` and ``S_ISREG``, then ``fstat``
    on the open descriptor against a swap in between), with ``O_NONBLOCK`` and
    ``O_NOCTTY``; a FIFO, device, socket or directory is never opened, so
    nothing here can block. At most ``limit`` bytes are accepted. Anything else
    that stops the read (permission, a symlink loop, an I/O error from a dead
    device, a larger file) raises :class:`UnreadableFile` naming the path.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnreadableFile(f"{path} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnreadableFile(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UnreadableFile(f"{path} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise UnreadableFile(f"{path} is larger than {limit} bytes")
    return b"".join(chunks).decode("utf-8", errors="replace").strip()


def read_small_file(path: str) -> str | None:
    """Stripped content of a small regular file, ``None`` if it cannot be read."""
    try:
        return read_regular_file(path)
    except UnreadableFile:
        return None


def _read_attribute(path: str, problems: list[str] | None, required: bool = False) -> str | None:
    """A sysfs attribute; ``None`` when absent or unreadable. Unreadable is noted
    in ``problems``, and so is absent when the attribute is ``required``."""
    try:
        text = read_regular_file(path, SYSFS_READ_LIMIT)
    except UnreadableFile as exc:
        _note(problems, f"sysfs {exc}")
        return None
    if text is None and required:
        _note(problems, f"sysfs {path} is missing")
    return text


def _is_gpu_class(pci_class: str | None) -> bool:
    return pci_class is not None and pci_class.lower().startswith(GPU_PCI_CLASS_PREFIXES)


def _is_nvswitch_class(pci_class: str | None) -> bool:
    return pci_class is not None and pci_class.lower().startswith(NVSWITCH_PCI_CLASS_PREFIX)


def pci_gpu_from_sysfs(
    device_dir: str, address: str, index: int, problems: list[str] | None = None
) -> dict[str, Any]:
    """One NVIDIA GPU seen only on the PCI bus (no driver answering)."""

    def read(name: str) -> str | None:
        return _read_attribute(os.path.join(device_dir, name), problems)

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


def scan_pci(sysfs_root: str, problems: list[str] | None = None) -> dict[str, Any] | None:
    """NVIDIA GPUs and NVSwitches under ``<sysfs_root>/bus/pci/devices``.

    Returns ``{"gpus": [...], "nvswitch_count": n}`` or ``None`` when the
    directory cannot be listed. GPUs are ordered by bus address.

    Absent (a kernel without PCI): ``None`` and no problem. Anything else that
    stops the scan is a problem in ``problems``: the directory unlistable, a
    device whose ``vendor`` or ``class`` cannot be read (it may be a GPU; the
    NVSwitch count is then unknown, ``None``), two entries naming the same bus
    id (counted once).
    """
    devices_dir = os.path.join(sysfs_root, "bus", "pci", "devices")
    try:
        addresses = sorted(os.listdir(devices_dir))
    except FileNotFoundError:
        return None
    except OSError as exc:
        _note(problems, f"sysfs {devices_dir} cannot be listed: {exc.strerror or exc}")
        return None
    gpus: list[dict[str, Any]] = []
    nvswitch_count: int | None = 0
    seen: dict[str, str] = {}
    for address in addresses:
        device_dir = os.path.join(devices_dir, address)
        bus_id = normalize_pci_bus_id(address) or address
        if bus_id in seen:
            _note(
                problems,
                f"sysfs {device_dir} repeats bus id {bus_id} of {seen[bus_id]}; counted once",
            )
            continue
        seen[bus_id] = address
        # Every PCI device has both: one that cannot be read may be a GPU.
        vendor = _read_attribute(os.path.join(device_dir, "vendor"), problems, required=True)
        if vendor is None:
            nvswitch_count = None
            continue
        if vendor.lower() != NVIDIA_PCI_VENDOR:
            continue
        pci_class = _read_attribute(os.path.join(device_dir, "class"), problems, required=True)
        if pci_class is None:
            nvswitch_count = None
        elif _is_gpu_class(pci_class):
            gpus.append(pci_gpu_from_sysfs(device_dir, address, len(gpus), problems))
        elif _is_nvswitch_class(pci_class) and nvswitch_count is not None:
            nvswitch_count += 1
    return {"gpus": gpus, "nvswitch_count": nvswitch_count}


def read_nvidia_module(
    sysfs_root: str, problems: list[str] | None = None
) -> tuple[bool, str | None]:
    """Whether the ``nvidia`` kernel module is loaded, and its version."""
    module_dir = os.path.join(sysfs_root, "module", "nvidia")
    if not os.path.isdir(module_dir):
        return False, None
    return True, clean_value(_read_attribute(os.path.join(module_dir, "version"), problems))


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


def read_meminfo_total_mib(proc_root: str, problems: list[str] | None = None) -> int | None:
    """Host RAM in MiB; ``None`` when ``meminfo`` is absent, unreadable (noted)
    or has no readable ``MemTotal`` line (noted)."""
    path = os.path.join(proc_root, "meminfo")
    try:
        text = read_regular_file(path, PROC_READ_LIMIT)
    except UnreadableFile as exc:
        _note(problems, f"procfs {exc}")
        return None
    if text is None:
        return None
    total = parse_meminfo_total_mib(text)
    if total is None:
        _note(problems, f"procfs {path} has no readable MemTotal line")
    return total


def count_numa_nodes(sysfs_root: str, problems: list[str] | None = None) -> int | None:
    """Number of ``node<N>`` dirs in ``<sysfs_root>/devices/system/node``;
    ``None`` when the directory is absent (kernel without NUMA), empty or
    unreadable (noted)."""
    node_dir = os.path.join(sysfs_root, "devices", "system", "node")
    try:
        names = os.listdir(node_dir)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _note(problems, f"sysfs {node_dir} cannot be listed: {exc.strerror or exc}")
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
    """A finite float from a number or a numeric string; ``None`` otherwise
    (booleans, NaN, infinities, integers too large for a float)."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            number = float(value.strip())
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


_TIER_VRAM_RULE = (
    f"a positive, finite number of GiB no larger than {MAX_TIER_VRAM_GIB} "
    f"({MAX_GPUS_PER_HOST} GPUs of 16 TiB, the most a host can hold)"
)


def validate_tiers(tiers: Iterable[Any] | None) -> list[dict[str, Any]]:
    """Check a tier table and return it as ``[{"name", "vram_gib"}]``.

    Each entry needs a non-empty ``name`` (not ``cpu``, the fallback tier) and a
    ``vram_gib`` that is a positive, finite number no larger than
    ``MAX_TIER_VRAM_GIB``; names are unique; the entries may come in any order,
    but sorted by class their thresholds in MiB (what the decision compares)
    must strictly increase, so no two tiers tie. Extra keys (a model name, say)
    are allowed and ignored. Raises ``ValueError`` naming the entry and field.
    """
    if tiers is None:
        return [dict(tier) for tier in DEFAULT_TIERS]
    checked: list[dict[str, Any]] = []
    names: dict[str, int] = {}
    thresholds: dict[int, int] = {}
    for position, entry in enumerate(tiers):
        where = f"tiers[{position}] ({_shown(entry)})"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: each tier must be a mapping with name and vram_gib")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: name must be a non-empty string")
        name = name.strip()
        if name.casefold() == CPU_TIER:
            raise ValueError(f"{where}: '{CPU_TIER}' is the fallback tier and cannot be a name")
        raw = entry.get("vram_gib")
        vram_gib = _as_number(raw)
        if vram_gib is None or not 0 < vram_gib <= MAX_TIER_VRAM_GIB:
            raise ValueError(f"{where}: vram_gib must be {_TIER_VRAM_RULE}, got {_shown(raw)}")
        if name in names:
            raise ValueError(f"{where}: name '{name}' repeats tiers[{names[name]}]")
        needed = tier_min_vram_mib(vram_gib)
        if needed in thresholds:
            other = thresholds[needed]
            raise ValueError(
                f"{where}: vram_gib {_shown(raw)} repeats tiers[{other}]: both need "
                f"{needed} MiB, so the thresholds would not strictly increase"
            )
        names[name] = position
        thresholds[needed] = position
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
    source: str,
    usable_vram_mib: int | None,
    tiers: Sequence[Mapping[str, Any]],
    problems: Sequence[str] = (),
) -> str | None:
    """Tier of a host, or ``None`` while it cannot be decided.

    * any problem (the hardware could not be read completely): ``None``.
    * ``none`` (no GPU anywhere): ``cpu``.
    * ``pci`` (GPUs seen but no driver answering): ``None`` until it does.
    * ``nvidia-smi``: by usable VRAM; ``None`` when some GPU's is unknown.
    """
    if problems:
        return None
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
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``llmfleet_hardware`` fact from what was read.

    ``smi`` is a parsed nvidia-smi document, or ``None`` when nvidia-smi did not
    answer; ``pci`` is :func:`scan_pci`'s result (``None``: sysfs unreadable or
    absent). ``problems`` are the reasons, beyond the document's own, that the
    hardware could not be read completely; all of them land in the fact.
    """
    nvswitch_count = pci["nvswitch_count"] if pci is not None else None
    module_loaded, module_version = nvidia_module
    found = [*(smi.get("problems", ()) if smi is not None else ()), *problems]
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
        # Nothing seen, but something unread: a GPU may hide there.
        usable = None if gpus or found else 0
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
        "problems": found,
    }
