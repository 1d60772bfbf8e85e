"""The fleet's report: its inputs read from the control node, and the text table.

Reads the fact cache through Ansible's cache plugin (the control node has Ansible),
since the files' layout is Ansible's own and changes between releases.

`preflight` leaves `llmfleet_hardware`, `llmfleet_tier` and
`preflight_tier` in the cache (one JSON file per host); this turns them
into a table an operator reads, without touching any host. The hardware evaluations
(``.cache/evaluation/<host>.json``) and `llmfleet bench` results
(``.cache/bench/<host>.json``) are read by `load_documents`; the report's data model is
`llmfleet.report_data`, and `text_rows` draws the table from it: the columns of
`COLUMNS`, then those of `EXTRA_COLUMNS`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

COLUMNS = ("host", "tier", "source", "gpus", "usable VRAM", "driver", "CUDA", "RAM", "cores")
#: Host memory bandwidth, decode tokens/s of one stream (bench at concurrency 1, else the
#: evaluation's), decode as a share of the physical limit, the active color's model.
EXTRA_COLUMNS = ("mem BW", "decode c1", "of limit", "model")
#: The JSON Schemas shipped beside this module (a document is checked when its schema is there).
SCHEMAS = Path(__file__).resolve().parent / "schemas"
#: The largest result file read (a bench document of many levels is well under 1 MiB).
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
#: How many schema problems of one document are quoted.
MAX_SCHEMA_PROBLEMS = 3


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


# -- result documents (evaluations, bench runs) -----------------------------------------------


def schema_problems(document: Any, schema_file: Path | None) -> list[str]:
    """What `schema_file` (a JSON Schema) finds wrong in `document`; none when the file is
    absent (the schema is published with the producer, which may come later)."""
    if schema_file is None or not schema_file.is_file():
        return []
    from llmfleet.validation import check, compile_schema

    validator = compile_schema(json.loads(schema_file.read_text(encoding="utf-8")))
    issues = check(validator, document)
    found = [
        f"{'/'.join(str(part) for part in issue.path) or '(document)'}: {issue.message}"
        for issue in issues[:MAX_SCHEMA_PROBLEMS]
    ]
    if len(issues) > MAX_SCHEMA_PROBLEMS:
        found.append(f"and {len(issues) - MAX_SCHEMA_PROBLEMS} more")
    return found


def load_documents(
    folder: Path, schema: str, schema_file: Path | None = None
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each ``<host>.json`` in `folder` whose ``schema`` field is `schema`, by host (the
    file's name), and the problems met: a file that cannot be read, is not JSON, names
    another schema (left out), or breaks `schema_file` (kept: the report reads every field
    with care, and says what it found). A folder that does not exist holds nothing."""
    documents: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    if not folder.is_dir():
        return documents, problems
    for path in sorted(folder.glob("*.json")):
        where = str(path)
        try:
            if not path.is_file():
                continue
            if path.stat().st_size > MAX_DOCUMENT_BYTES:
                problems.append(f"{where}: over {MAX_DOCUMENT_BYTES // 2**20} MiB; left out")
                continue
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            problems.append(f"{where}: cannot be read ({exc.strerror or exc}); left out")
            continue
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"{where}: not JSON ({exc}); left out")
            continue
        if not isinstance(document, Mapping) or document.get("schema") != schema:
            found = document.get("schema") if isinstance(document, Mapping) else None
            problems.append(f"{where}: schema is {found!r}, not {schema!r}; left out")
            continue
        problems += [f"{where}: {problem}" for problem in schema_problems(document, schema_file)]
        documents[path.stem] = dict(document)
    return documents, problems


# -- the text table, from the report's data ----------------------------------------------------


def _names_text(names: list[str]) -> str:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{count}x {name}" for name, count in counts.items()) or "-"


def _figure(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def text_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """One row per host of a `llmfleet.report_data.build_report` document, in the order of
    COLUMNS + EXTRA_COLUMNS; the first columns read as `report_rows` has them."""
    rows = []
    for host in report["hosts"]:
        tier, hardware, summary = host["tier"], host["hardware"] or {}, host["summary"]
        cores = hardware.get("cpu_cores")
        fraction = summary["fraction_of_limit"]
        rows.append(
            (
                host["host"],
                f"{tier['name'] or 'undecided'} ({tier['source']})",
                str(hardware.get("source")),
                _names_text(hardware.get("gpu_names") or []),
                _mib(hardware.get("usable_vram_mib")),
                hardware.get("driver_version") or "-",
                hardware.get("cuda_version") or "-",
                _mib(hardware.get("memory_total_mib")),
                "-" if cores is None else str(cores),
                _figure(summary["memory_bandwidth_gib_per_s"], 1, " GiB/s"),
                _figure(summary["decode_tokens_per_s_c1"], 1, " tok/s"),
                "-" if fraction is None else f"{fraction * 100:.0f} %",
                summary["active_model"] or "-",
            )
        )
    return rows


def format_report(report: Mapping[str, Any]) -> str:
    """The text report: the host table, then what could not be read, one line each."""
    lines = [format_table(text_rows(report), COLUMNS + EXTRA_COLUMNS)]
    prometheus = report.get("prometheus")
    if prometheus and prometheus.get("error"):
        lines.append(f"\nPrometheus: {prometheus['error']} (no live figures in this report)")
    if report.get("problems"):
        lines.append("")
        lines += [f"note: {problem}" for problem in report["problems"]]
    return "\n".join(lines)
