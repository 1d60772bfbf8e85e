"""The hardware evaluation stage's parsing and decisions (role hardware_eval).

Pure functions: the tools' output in, numbers and verdicts out; the role runs the tools and
writes what :func:`evaluation_document` returns (schema ``llmfleet.hwevaluation/1``,
src/llmfleet/schemas/hwevaluation-1.json). Tests: tests/unit/test_evaluation_*.py, against
real output of the tools in tests/captures/.

Units: bandwidths in GiB/s (2^30 bytes per second), sizes in bytes, times in seconds.
stress-ng prints MB as 2^20 bytes (its ``MB`` macro); likwid-bench prints MByte/s as 10^6
bytes per second; the CUDA program prints GiB/s.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SCHEMA = "llmfleet.hwevaluation/1"
GIB = 1024**3
MIB = 1024**2

#: Effective PCIe payload rate per lane and direction, in bytes per second, after the line
#: encoding: gen 1 and 2 (2.5 and 5 GT/s) use 8b/10b, gen 3 to 5 (8, 16, 32 GT/s) 128b/130b,
#: gen 6 (64 GT/s, PAM4) FLIT mode with 242 payload bytes in 256. So 250 MB/s, 500 MB/s,
#: 984.6 MB/s, 1.969 GB/s, 3.938 GB/s and 7.563 GB/s per lane. Packet headers (TLP/DLLP)
#: cost another 10-20 %, which the fractions the role judges by leave room for.
PCIE_LANE_BYTES_PER_S: dict[int, float] = {
    1: 2.5e9 * 8 / 10 / 8,
    2: 5.0e9 * 8 / 10 / 8,
    3: 8.0e9 * 128 / 130 / 8,
    4: 16.0e9 * 128 / 130 / 8,
    5: 32.0e9 * 128 / 130 / 8,
    6: 64.0e9 * 242 / 256 / 8,
}
PCIE_ENCODING = {
    1: "8b/10b",
    2: "8b/10b",
    3: "128b/130b",
    4: "128b/130b",
    5: "128b/130b",
    6: "FLIT 242B/256B",
}

#: The fields the role samples with nvidia-smi while the engine benchmark runs, in order
#: (`--format=csv,noheader,nounits`); ``clocks.sm`` is nvidia-smi's alias of clocks.current.sm.
SAMPLE_FIELDS = (
    "index",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "clocks.sm",
)
_SAMPLE_KEYS = (
    ("gpu", int),
    ("utilization_percent", float),
    ("memory_used_mib", int),
    ("memory_total_mib", int),
    ("temperature_c", float),
    ("power_w", float),
    ("sm_clock_mhz", int),
)
_NOT_AVAILABLE = {
    "n/a",
    "[n/a]",
    "not supported",
    "[not supported]",
    "unknown error",
    "[unknown error]",
    "",
    "-",
}

SEVERITIES = ("ok", "warning", "finding")

#: Vendor ids Ansible's processor fact lists between the index and the model name.
_CPU_VENDORS = {"GenuineIntel", "AuthenticAMD", "HygonGenuine", "CentaurHauls", "ARM"}


class EvaluationError(ValueError):
    """Input the stage cannot use; the message names it."""


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _number(text: str) -> float | None:
    """A number from a tool's cell: None for N/A, [Not Supported] and the like."""
    cleaned = text.strip()
    if cleaned.casefold() in _NOT_AVAILABLE:
        return None
    cleaned = re.sub(r"\s*(MiB|MHz|W|%|C)$", "", cleaned)
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _tail(text: str | None, lines: int = 3, width: int = 300) -> str:
    """The last lines of a tool's output, on one line, for a reason."""
    kept = [line.strip() for line in (text or "").strip().splitlines() if line.strip()][-lines:]
    return " / ".join(kept)[-width:]


def _gib(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} GiB/s"


def _mb(value: float | int | None) -> str:
    return "unknown" if value is None else f"{value / 1e6:.1f} MB"


def size_bytes(text: str) -> int:
    """A sysfs or tool size: "32768K", "1024K", "32M", "512" (bytes), binary multiples."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise EvaluationError(f"{text!r} is not a size (such as 32768K)")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(match.group(1)) * 1024**power


def cpu_list_count(text: str) -> int:
    """CPUs in a sysfs list such as "0-3,8-11" (8) or "0" (1)."""
    count = 0
    for part in str(text).strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise EvaluationError(f"{text!r} is not a CPU list (such as 0-3,8-11)")
        count += (int(last) - int(first) + 1) if last else 1
    return count


def nvidia_bus_id(text: str | None) -> str | None:
    """A PCI bus id in the sysfs form: "00000000:01:00.0" and "0000:01:00.0" → "0000:01:00.0"."""
    if not text:
        return None
    match = re.fullmatch(
        r"\s*(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.(\d)\s*", text
    )
    if not match:
        return None
    domain = int(match.group(1) or "0", 16)
    return f"{domain:04x}:{match.group(2).lower()}:{match.group(3).lower()}.{match.group(4)}"


# ---------------------------------------------------------------------------
# The host: CPU, last-level cache, the memory measurement's plan
# ---------------------------------------------------------------------------


def parse_cache_sysfs(text: str) -> dict[str, Any]:
    """The last-level cache from ``grep -r . <cpu0>/cache <cpu>/online`` output.

    Each line is ``<path>:<value>``. The LLC is the highest ``level`` among the data and
    unified caches of cpu0; its ``shared_cpu_list`` and the online CPUs give how many such
    caches the host has (an EPYC has one L3 per CCD): ``llc_bytes`` is their total, what a
    working set must exceed to be served by memory. Returns {llc_bytes, llc_level,
    llc_instance_bytes, llc_instances}; raises EvaluationError when no cache is listed.
    """
    caches: dict[str, dict[str, str]] = {}
    online: str | None = None
    for line in str(text).splitlines():
        path, sep, value = line.partition(":")
        if not sep:
            continue
        if path.endswith("/cpu/online"):
            online = value.strip()
            continue
        match = re.search(r"/cache/(index\d+)/([a-z_]+)$", path)
        if match:
            caches.setdefault(match.group(1), {})[match.group(2)] = value.strip()
    usable = [
        c
        for c in caches.values()
        if c.get("type") in ("Data", "Unified") and c.get("level", "").isdigit() and c.get("size")
    ]
    if not usable:
        raise EvaluationError(
            "sysfs lists no data or unified cache under /sys/devices/system/cpu/cpu0/cache"
        )
    llc = max(usable, key=lambda c: (int(c["level"]), size_bytes(c["size"])))
    instance = size_bytes(llc["size"])
    instances = 1
    if online and llc.get("shared_cpu_list"):
        sharing = cpu_list_count(llc["shared_cpu_list"])
        instances = max(1, math.ceil(cpu_list_count(online) / max(sharing, 1)))
    return {
        "llc_bytes": instance * instances,
        "llc_level": int(llc["level"]),
        "llc_instance_bytes": instance,
        "llc_instances": instances,
    }


def cpu_summary(
    facts: Mapping[str, Any], hardware: Mapping[str, Any] | None, cache: Mapping[str, Any]
) -> dict[str, Any]:
    """The document's ``cpu`` from Ansible's facts, gpu_facts' and the cache read from sysfs."""
    processor = [str(item) for item in facts.get("processor") or []]
    names = [item for item in processor if not item.isdigit() and item not in _CPU_VENDORS]
    sockets = facts.get("processor_count")
    cores_per_socket = facts.get("processor_cores")
    cores = sockets * cores_per_socket if sockets and cores_per_socket else None
    threads = facts.get("processor_vcpus") or facts.get("processor_nproc")
    return {
        "model": names[0] if names else None,
        "sockets": sockets,
        "cores": cores,
        "threads": threads,
        "numa_nodes": (hardware or {}).get("numa_nodes"),
        "llc_bytes": cache.get("llc_bytes"),
    }


def memory_plan(
    llc_bytes: int,
    threads: int,
    factor: float = 4,
    minimum_bytes: int = GIB,
    memory_total_bytes: int | None = None,
) -> dict[str, Any]:
    """The working set and the tools' arguments for a memory bandwidth run on all threads.

    The working set is ``factor`` times the last-level cache, at least ``minimum_bytes``,
    and at most a quarter of the host's memory. likwid-bench takes it as one size (kB are
    10^3 bytes there); stress-ng's stream sizes each instance's three arrays at 4 x
    (``--stream-l3-size`` / instances), so 12 x the size in all: the size given is the
    working set / 12.
    """
    if threads < 1:
        raise EvaluationError(f"threads is {threads}; at least 1 is needed")
    working_set = max(int(llc_bytes * factor), int(minimum_bytes))
    if memory_total_bytes:
        working_set = min(working_set, memory_total_bytes // 4)
    likwid_kb = max(working_set // 1000, 1)
    stream_kib = max(working_set // 12 // 1024, 4)
    return {
        "threads": int(threads),
        "working_set_bytes": working_set,
        "likwid_size": f"{likwid_kb}kB",
        "likwid_working_set_bytes": likwid_kb * 1000,
        "stress_ng_l3_size": f"{stream_kib}K",
        "stress_ng_working_set_bytes": stream_kib * 1024 * 12,
        "exceeds_llc": working_set > llc_bytes,
    }


# ---------------------------------------------------------------------------
# Host memory bandwidth: likwid-bench and stress-ng
# ---------------------------------------------------------------------------


def likwid_tests(text: str) -> list[str]:
    """The test names ``likwid-bench -a`` lists ("copy_avx - Double-precision ...")."""
    names = []
    for line in str(text).splitlines():
        match = re.match(r"^([A-Za-z0-9_]+) - ", line)
        if match:
            names.append(match.group(1))
    return names


def choose_likwid_test(listing: str, preferred: Sequence[str]) -> str | None:
    """The first of ``preferred`` that ``likwid-bench -a`` lists; None when none is."""
    available = set(likwid_tests(listing))
    return next((test for test in preferred if test in available), None)


def parse_likwid_bench(text: str) -> dict[str, Any]:
    """likwid-bench's report: {test, threads, working_set_bytes, gib_per_s, reason}.

    ``MByte/s`` is the data volume (loads and stores) over the time, in 10^6 bytes per
    second. An ERROR line, "not supported" or a report without a rate is a reason (the role
    then falls back to stress-ng), never a number.
    """
    body = str(text)
    result: dict[str, Any] = {
        "test": None,
        "threads": None,
        "working_set_bytes": None,
        "gib_per_s": None,
        "reason": None,
    }
    for pattern, key, kind in (
        (r"^Test:\s*(\S+)", "test", str),
        (r"^Using (\d+) threads", "threads", int),
        (r"^Size \(Byte\):\s*(\d+)", "working_set_bytes", int),
    ):
        match = re.search(pattern, body, re.MULTILINE)
        if match:
            result[key] = kind(match.group(1))
    error = re.search(
        r"^.*(\berror\b|not supported|unsupported).*$", body, re.MULTILINE | re.IGNORECASE
    )
    rate = re.search(r"^MByte/s:\s*([0-9.]+)\s*$", body, re.MULTILINE)
    if error:
        result["reason"] = f"likwid-bench: {error.group(0).strip()}"
    elif not rate:
        result["reason"] = f"likwid-bench printed no MByte/s: {_tail(body) or 'no output'}"
    else:
        result["gib_per_s"] = _round(float(rate.group(1)) * 1e6 / GIB)
    return result


def parse_stress_ng_stream(text: str) -> dict[str, Any]:
    """stress-ng --stream's memory rate: {instances, read_mib_per_s, write_mib_per_s, gib_per_s,
    reason}.

    Each instance that ran long enough (4.5 s of streaming) prints "stream: memory rate: R MB
    read/sec, W MB write/sec, ..." (MB = 2^20 bytes); the host's bandwidth is the sum of
    reads and writes over the instances. Without those lines, the ``--metrics`` lines
    ("memory read rate (MB per sec) (geometic mean of N instances)", times N) are used. A run
    too short to rate is a reason.
    """
    body = str(text)
    result: dict[str, Any] = {
        "instances": None,
        "read_mib_per_s": None,
        "write_mib_per_s": None,
        "gib_per_s": None,
        "reason": None,
    }
    rates = re.findall(
        r"stream: memory rate: ([0-9.]+) MB read/sec, ([0-9.]+) MB write/sec.*\(instance (\d+)\)",
        body,
    )
    if rates:
        by_instance = {int(i): (float(r), float(w)) for r, w, i in rates}
        read = sum(r for r, _ in by_instance.values())
        write = sum(w for _, w in by_instance.values())
        result["instances"] = len(by_instance)
    else:
        means = {
            kind: (float(value), int(count))
            for value, kind, count in re.findall(
                # 0.15: "memory read rate (MB per sec)"; later: "MB per sec memory read rate"
                r"stream\s+([0-9.]+) (?:MB per sec )?memory (read|write) rate (?:\(MB per sec\) )?"
                r"\(\w+ mean of (\d+) instances?\)",
                body,
            )
        }
        if "read" not in means or "write" not in means:
            too_short = re.search(r"run duration too short[^\n]*", body)
            result["reason"] = (
                f"stress-ng: {too_short.group(0).strip()} (raise hardware_eval_memory_seconds)"
                if too_short
                else f"stress-ng printed no memory rate: {_tail(body) or 'no output'}"
            )
            return result
        instances = means["read"][1]
        read, write = means["read"][0] * instances, means["write"][0] * instances
        result["instances"] = instances
    result["read_mib_per_s"] = _round(read, 2)
    result["write_mib_per_s"] = _round(write, 2)
    result["gib_per_s"] = _round((read + write) * MIB / GIB)
    return result


def memory_result(
    plan: Mapping[str, Any],
    likwid: Mapping[str, Any] | None,
    stress_ng: Mapping[str, Any] | None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The document's ``memory_bandwidth``: likwid-bench's rate where it gave one, else
    stress-ng's, else null with the reasons of both.

    ``likwid`` and ``stress_ng`` are {test, rc, stdout, stderr} of the runs (None: not run).
    """
    reasons = [reason] if reason else []
    if likwid is not None:
        parsed = parse_likwid_bench(f"{likwid.get('stdout', '')}\n{likwid.get('stderr', '')}")
        if parsed["gib_per_s"] is not None and not likwid.get("rc"):
            return {
                "tool": "likwid-bench",
                "test": parsed["test"] or likwid.get("test"),
                "threads": parsed["threads"] or plan["threads"],
                "working_set_bytes": parsed["working_set_bytes"]
                or plan["likwid_working_set_bytes"],
                "gib_per_s": parsed["gib_per_s"],
                "reason": None,
            }
        reasons.append(parsed["reason"] or f"likwid-bench exited {likwid.get('rc')}")
    if stress_ng is not None:
        parsed = parse_stress_ng_stream(
            f"{stress_ng.get('stdout', '')}\n{stress_ng.get('stderr', '')}"
        )
        if parsed["gib_per_s"] is not None and not stress_ng.get("rc"):
            return {
                "tool": "stress-ng",
                "test": "stream",
                "threads": parsed["instances"] or plan["threads"],
                "working_set_bytes": plan["stress_ng_working_set_bytes"],
                "gib_per_s": parsed["gib_per_s"],
                "reason": None,
            }
        reasons.append(parsed["reason"] or f"stress-ng exited {stress_ng.get('rc')}")
    return {
        "tool": None,
        "test": None,
        "threads": plan.get("threads"),
        "working_set_bytes": None,
        "gib_per_s": None,
        "reason": "; ".join(reasons) or "not measured",
    }


# ---------------------------------------------------------------------------
# GPUs: PCIe, the CUDA program, sampling
# ---------------------------------------------------------------------------


def pcie_expected_gib_per_s(gen: int | None, width: int | None) -> float | None:
    """What a link of this generation and width moves per direction after encoding, GiB/s."""
    if gen not in PCIE_LANE_BYTES_PER_S or not width or width < 1:
        return None
    return _round(PCIE_LANE_BYTES_PER_S[int(gen)] * int(width) / GIB)


def pcie_rate_generation(gib_per_s: float, width: int) -> int:
    """The lowest generation whose rate at this width reaches ``gib_per_s`` (the rates of gen N)."""
    for gen in sorted(PCIE_LANE_BYTES_PER_S):
        if gib_per_s <= PCIE_LANE_BYTES_PER_S[gen] * width / GIB:
            return gen
    return max(PCIE_LANE_BYTES_PER_S)


def parse_cuda_program(stdout: str) -> dict[str, Any]:
    """The CUDA program's JSON document; {"error": ...} when it printed one or none."""
    text = str(stdout or "").strip()
    if not text:
        return {"error": "the CUDA program printed nothing"}
    try:
        document = json.loads(text.splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"error": f"the CUDA program printed no JSON: {_tail(text)}"}
    if not isinstance(document, dict):
        return {"error": "the CUDA program printed JSON that is not an object"}
    if document.get("error"):
        return {"error": str(document["error"])}
    if not isinstance(document.get("devices"), list):
        return {"error": "the CUDA program's JSON has no devices list"}
    return document


def _best(rates: Iterable[Mapping[str, Any]] | None) -> float | None:
    values = [float(r["gib_per_s"]) for r in rates or () if r.get("gib_per_s") is not None]
    return _round(max(values)) if values else None


def parse_gpu_samples(text: str, interval_ms: int = 1000) -> list[dict[str, Any]]:
    """nvidia-smi's sampled rows (fields SAMPLE_FIELDS, csv,noheader,nounits) as a time series.

    nvidia-smi -lms prints one row per GPU per tick, without a timestamp in these fields:
    the k-th row of a GPU is at t = k x interval. Rows that do not have the fields (a
    warning nvidia-smi printed, a cut last line) are skipped; N/A values are null.
    """
    samples = []
    ticks: dict[int, int] = {}
    for line in str(text).splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != len(SAMPLE_FIELDS) or not cells[0].isdigit():
            continue
        sample: dict[str, Any] = {}
        for (key, kind), cell in zip(_SAMPLE_KEYS, cells, strict=True):
            value = _number(cell)
            sample[key] = None if value is None else kind(value)
        gpu = sample["gpu"]
        tick = ticks.get(gpu, 0)
        ticks[gpu] = tick + 1
        samples.append({"t": _round(tick * interval_ms / 1000.0, 3), **sample})
    return samples


def gpus_result(
    hardware: Mapping[str, Any] | None, program: Mapping[str, Any] | None, reason: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[int, dict[str, Any]]]:
    """The document's ``gpus`` and ``p2p``, and the program's extra figures per GPU index.

    GPUs are the facts' (nvidia-smi order); the program's devices are matched by PCI bus id
    (it runs with CUDA_DEVICE_ORDER=PCI_BUS_ID, so by index too when ids are missing).
    """
    fact_gpus = list((hardware or {}).get("gpus") or [])
    devices = list((program or {}).get("devices") or [])
    by_bus = {nvidia_bus_id(d.get("pci_bus_id")): d for d in devices if d.get("pci_bus_id")}
    cuda_to_fact: dict[int, int] = {}
    extra: dict[int, dict[str, Any]] = {}
    gpus = []
    for position, gpu in enumerate(fact_gpus):
        index = gpu.get("index", position)
        device = by_bus.get(nvidia_bus_id(gpu.get("pci_bus_id")))
        if device is None and len(devices) == len(fact_gpus) and position < len(devices):
            device = devices[position]
        if device is not None:
            cuda_to_fact[int(device.get("index", position))] = int(index)
            extra[int(index)] = {
                "memory_theoretical_gib_per_s": device.get("memory_theoretical_gib_per_s"),
                "l2_cache_bytes": device.get("l2_cache_bytes"),
            }
        gen_max, width_max = gpu.get("pcie_gen_max"), gpu.get("pcie_width_max")
        gpu_reason = None
        if device is None:
            gpu_reason = reason or "the CUDA program did not list this GPU"
        gpus.append(
            {
                "index": int(index),
                "name": gpu.get("name"),
                "uuid": gpu.get("uuid"),
                "pcie": {
                    "gen_current": gpu.get("pcie_gen_current"),
                    "gen_max": gen_max,
                    "width_current": gpu.get("pcie_width_current"),
                    "width_max": width_max,
                    "expected_gib_per_s": pcie_expected_gib_per_s(gen_max, width_max),
                    "h2d_gib_per_s": _best(device.get("h2d")) if device else None,
                    "d2h_gib_per_s": _best(device.get("d2h")) if device else None,
                },
                "memory_bandwidth_gib_per_s": _best(device.get("d2d")) if device else None,
                "reason": gpu_reason,
            }
        )
    p2p = []
    for pair in (program or {}).get("p2p") or []:
        if not pair.get("peer_access") or pair.get("gib_per_s") is None:
            continue
        source, target = int(pair["from"]), int(pair["to"])
        p2p.append(
            {
                "from": cuda_to_fact.get(source, source),
                "to": cuda_to_fact.get(target, target),
                "gib_per_s": _round(pair["gib_per_s"]),
            }
        )
    return gpus, p2p, extra


def peer_gaps(program: Mapping[str, Any] | None) -> list[tuple[int, int]]:
    """Ordered GPU pairs (CUDA indices) without peer access."""
    return [
        (int(pair["from"]), int(pair["to"]))
        for pair in (program or {}).get("p2p") or []
        if not pair.get("peer_access")
    ]


# ---------------------------------------------------------------------------
# The engine: llama-bench, the KV cache, the physical limit
# ---------------------------------------------------------------------------


def parse_llama_bench(text: str) -> dict[str, Any]:
    """``llama-bench -o json`` output: {decode_tokens_per_s, prefill_tokens_per_s, model_size,
    n_gen, n_prompt, n_depth, backends, n_gpu_layers, model_type}.

    A test with n_gen > 0 and n_prompt == 0 is decode (tg), one with n_prompt > 0 and
    n_gen == 0 prefill (pp); ``avg_ts`` is tokens per second. Raises EvaluationError when
    the output is not llama-bench's JSON array.
    """
    body = str(text).strip()
    start = body.find("[")
    try:
        tests = json.loads(body[start:]) if start >= 0 else None
    except json.JSONDecodeError as err:
        raise EvaluationError(f"llama-bench printed no JSON array: {err}") from err
    if not isinstance(tests, list) or not tests:
        raise EvaluationError("llama-bench printed no test result")
    result: dict[str, Any] = {"decode_tokens_per_s": None, "prefill_tokens_per_s": None}
    for test in tests:
        if not isinstance(test, dict):
            continue
        n_prompt, n_gen = int(test.get("n_prompt") or 0), int(test.get("n_gen") or 0)
        if n_gen > 0 and n_prompt == 0:
            result["decode_tokens_per_s"] = _round(test.get("avg_ts"), 2)
            result["n_gen"] = n_gen
            result["n_depth"] = int(test.get("n_depth") or 0)
        elif n_prompt > 0 and n_gen == 0:
            result["prefill_tokens_per_s"] = _round(test.get("avg_ts"), 2)
            result["n_prompt"] = n_prompt
        for key in (
            "model_size",
            "model_type",
            "backends",
            "n_gpu_layers",
            "model_n_params",
            "n_threads",
            "build_commit",
        ):
            if key in test:
                result.setdefault(key, test[key])
    return result


def parse_kv_cache_bytes_per_token(log: str) -> int | None:
    """Bytes of KV cache per token of context, from llama.cpp's log (llama-bench -v, stderr).

    "llama_kv_cache: size =   22.50 MiB (  1024 cells,  30 layers,  1/1 seqs), K (f16): ..."
    (llama_kv_cache_unified in some builds): the cache's size over its cells. None when the
    log has no such line.
    """
    match = re.search(r"llama_kv_cache\w*:\s+size\s*=\s*([0-9.]+) MiB\s*\(\s*(\d+) cells", str(log))
    if not match or int(match.group(2)) == 0:
        return None
    return round(float(match.group(1)) * MIB / int(match.group(2)))


def physical_limit(
    bandwidth_gib_per_s: float | None,
    model_bytes: int | None,
    kv_bytes_per_token: int | None,
    context_tokens: int,
    decode_tokens_per_s: float | None,
    cache_bytes: int | None,
    cache_name: str,
    memory_name: str,
    unmeasured: str | None = None,
) -> dict[str, Any]:
    """Decode's physical limit: memory bandwidth / bytes read per generated token.

    Each generated token reads every weight once and the KV cache of the context
    (``kv_bytes_per_token`` x ``context_tokens``). Where the weights and that cache fit in
    ``cache_bytes`` (the host's last-level cache, or the GPU's L2), decode is served from the
    cache and the bandwidth bounds nothing: the fraction is null and the note says so.
    """
    out: dict[str, Any] = {
        "bytes_per_token": None,
        "physical_limit_tokens_per_s": None,
        "fraction_of_limit": None,
        "fraction_note": None,
    }
    if not model_bytes:
        out["fraction_note"] = "the model's size is unknown"
        return out
    kv = (kv_bytes_per_token or 0) * max(int(context_tokens), 0)
    per_token = int(model_bytes) + kv
    out["bytes_per_token"] = per_token
    if bandwidth_gib_per_s is None:
        out["fraction_note"] = unmeasured or f"the {memory_name} bandwidth was not measured"
        return out
    limit = float(bandwidth_gib_per_s) * GIB / per_token
    out["physical_limit_tokens_per_s"] = _round(limit, 2)
    if cache_bytes and per_token <= cache_bytes:
        out["fraction_note"] = (
            f"the model ({_mb(model_bytes)}) and the KV cache it reads ({_mb(kv)}) fit in the "
            f"{cache_name} ({_mb(cache_bytes)}): decode reads them from the cache, not from "
            f"{memory_name}, so the {memory_name} bandwidth does not bound it"
        )
    elif decode_tokens_per_s is not None and limit > 0:
        out["fraction_of_limit"] = _round(float(decode_tokens_per_s) / limit, 3)
    return out


def engine_result(
    engine: Mapping[str, Any] | None,
    memory: Mapping[str, Any],
    gpus: Sequence[Mapping[str, Any]],
    gpu_extra: Mapping[int, Mapping[str, Any]],
    llc_bytes: int | None,
) -> dict[str, Any] | None:
    """The document's ``engine`` from the recorded build and model and llama-bench's run.

    ``engine``: {build, model: {name, path, sha256, size}, rc, stdout, stderr, depth,
    reason} (None: no engine recorded). The model runs on the GPU when llama-bench reports a
    CUDA backend with layers offloaded; the bandwidth is then the GPUs' mean device memory
    bandwidth (layers split across GPUs run one after the other, so each GPU reads its share
    at its own rate), else the host's.
    """
    if not engine or not engine.get("build"):
        return None
    model = engine.get("model") or {}
    out: dict[str, Any] = {
        "build": str(engine["build"]),
        "model": model.get("name"),
        "model_bytes": model.get("size"),
        "kv_bytes_per_token": None,
        "context_tokens": None,
        "decode_tokens_per_s": None,
        "prefill_tokens_per_s": None,
        "bytes_per_token": None,
        "physical_limit_tokens_per_s": None,
        "fraction_of_limit": None,
        "fraction_note": None,
    }
    if engine.get("reason") or engine.get("rc"):
        out["fraction_note"] = "not measured: " + (
            engine.get("reason")
            or f"llama-bench exited {engine.get('rc')}: {_tail(engine.get('stderr'))}"
        )
        return out
    try:
        bench = parse_llama_bench(engine.get("stdout", ""))
    except EvaluationError as err:
        out["fraction_note"] = f"not measured: {err}"
        return out
    kv = parse_kv_cache_bytes_per_token(engine.get("stderr", ""))
    n_gen = int(bench.get("n_gen") or 0)
    context = int(bench.get("n_depth", engine.get("depth") or 0)) + n_gen // 2
    out.update(
        {
            "model_bytes": int(bench.get("model_size") or model.get("size") or 0) or None,
            "kv_bytes_per_token": kv,
            "context_tokens": context,
            "decode_tokens_per_s": bench["decode_tokens_per_s"],
            "prefill_tokens_per_s": bench["prefill_tokens_per_s"],
        }
    )
    on_gpu = "CUDA" in str(bench.get("backends") or "") and int(bench.get("n_gpu_layers") or 0) > 0
    if on_gpu:
        rates = [
            g["memory_bandwidth_gib_per_s"] for g in gpus if g.get("memory_bandwidth_gib_per_s")
        ]
        l2 = [int(e["l2_cache_bytes"]) for e in gpu_extra.values() if e.get("l2_cache_bytes")]
        reasons = sorted({str(g["reason"]) for g in gpus if g.get("reason")})
        limit = physical_limit(
            statistics.fmean(rates) if rates else None,
            out["model_bytes"],
            kv,
            context,
            out["decode_tokens_per_s"],
            max(l2) if l2 else None,
            "GPU's L2 cache",
            "GPU memory",
            unmeasured="the model runs on the GPU, whose memory bandwidth was not measured"
            + (f" ({'; '.join(reasons)})" if reasons else ""),
        )
    else:
        limit = physical_limit(
            memory.get("gib_per_s"),
            out["model_bytes"],
            kv,
            context,
            out["decode_tokens_per_s"],
            llc_bytes,
            "last-level cache",
            "host memory",
            unmeasured="the host's memory bandwidth was not measured"
            + (f" ({memory['reason']})" if memory.get("reason") else ""),
        )
    out.update(limit)
    return out


# ---------------------------------------------------------------------------
# The key, the verdicts, the document
# ---------------------------------------------------------------------------


def hardware_identity(facts: Mapping[str, Any], cache: Mapping[str, Any]) -> dict[str, Any]:
    """The hardware facts the results depend on, and nothing that moves between runs.

    Left out on purpose: the current PCIe generation (GPUs drop to gen 1 when idle), memory
    in use, the driver version. Host memory is counted in whole GiB (MemTotal moves by a few
    MiB with the kernel).
    """
    hardware = facts.get("llmfleet_hardware") or {}
    return {
        "schema": SCHEMA,
        "cpu": cpu_summary(facts, hardware, cache),
        "llc": dict(cache),
        "memory_gib": round((hardware.get("memory_total_mib") or 0) / 1024),
        "gpus": [
            {
                key: gpu.get(key)
                for key in (
                    "name",
                    "uuid",
                    "pci_bus_id",
                    "memory_total_mib",
                    "pcie_gen_max",
                    "pcie_width_max",
                )
            }
            for gpu in hardware.get("gpus") or []
        ],
    }


def evaluation_key(
    facts: Mapping[str, Any],
    cache: Mapping[str, Any],
    engine_build: str | None,
    model_sha256: str | None,
) -> dict[str, Any]:
    """The key the results are kept under: {hardware (sha256), engine_build, model_sha256}."""
    canonical = json.dumps(hardware_identity(facts, cache), sort_keys=True, separators=(",", ":"))
    return {
        "hardware": hashlib.sha256(canonical.encode()).hexdigest(),
        "engine_build": engine_build or None,
        "model_sha256": model_sha256 or None,
    }


def _verdict(severity: str, subject: str, message: str) -> dict[str, str]:
    return {"severity": severity, "subject": subject, "message": message}


def _others_median(values: Mapping[int, float], index: int) -> float | None:
    others = [v for k, v in values.items() if k != index and v is not None]
    return statistics.median(others) if others else None


def sibling_verdicts(
    gpus: Sequence[Mapping[str, Any]],
    samples: Sequence[Mapping[str, Any]],
    temperature_delta_c: float,
    slowdown: float,
) -> list[dict[str, str]]:
    """A GPU hotter or slower than its siblings (the host's other GPUs of the same name).

    Hotter: its highest temperature while the engine benchmark ran is more than
    ``temperature_delta_c`` above the median of its siblings'. Slower: its device memory or
    host-to-device bandwidth, or its mean SM clock under load, is more than ``slowdown`` (a
    fraction) below its siblings' median.
    """
    verdicts: list[dict[str, str]] = []
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for gpu in gpus:
        groups.setdefault(str(gpu.get("name")), []).append(gpu)
    for name, members in groups.items():
        if len(members) < 2:
            continue
        indices = [int(m["index"]) for m in members]
        hottest: dict[int, float] = {}
        clock: dict[int, float] = {}
        for index in indices:
            mine = [s for s in samples if s.get("gpu") == index]
            temps = [s["temperature_c"] for s in mine if s.get("temperature_c") is not None]
            if temps:
                hottest[index] = max(temps)
            busy = [
                s["sm_clock_mhz"]
                for s in mine
                if s.get("sm_clock_mhz") and (s.get("utilization_percent") or 0) >= 50
            ]
            if busy:
                clock[index] = statistics.fmean(busy)
        figures = {
            "device memory bandwidth": (
                {int(m["index"]): m.get("memory_bandwidth_gib_per_s") for m in members},
                "GiB/s",
            ),
            "host-to-device bandwidth": (
                {int(m["index"]): m["pcie"].get("h2d_gib_per_s") for m in members},
                "GiB/s",
            ),
            "SM clock under load": (clock, "MHz"),
        }
        for index in indices:
            median = _others_median(hottest, index)
            if (
                index in hottest
                and median is not None
                and hottest[index] > median + temperature_delta_c
            ):
                verdicts.append(
                    _verdict(
                        "finding",
                        f"gpu {index} temperature",
                        f"gpu {index} ({name}) reached {hottest[index]:.0f} °C during the engine "
                        f"benchmark, {hottest[index] - median:.0f} °C above its siblings' median "
                        f"({median:.0f} °C): check its airflow, fans and thermal paste",
                    )
                )
            for what, (values, unit) in figures.items():
                value = values.get(index)
                median = _others_median(values, index)
                if value is None or median is None or median <= 0:
                    continue
                if value < (1 - slowdown) * median:
                    verdicts.append(
                        _verdict(
                            "finding",
                            f"gpu {index} {what}",
                            f"gpu {index} ({name}): {what} {value:.1f} {unit}, "
                            f"{(1 - value / median) * 100:.0f}% below its siblings' median "
                            f"({median:.1f} {unit})",
                        )
                    )
    return verdicts


def _pcie_verdicts(gpu: Mapping[str, Any], min_fraction: float, ran: bool) -> list[dict[str, str]]:
    index, pcie = gpu["index"], gpu["pcie"]
    subject = f"gpu {index} pcie"
    out = []
    gen_max, width_max = pcie.get("gen_max"), pcie.get("width_max")
    gen_now, width_now = pcie.get("gen_current"), pcie.get("width_current")
    expected = pcie.get("expected_gib_per_s")
    if width_now and width_max and width_now < width_max:
        out.append(
            _verdict(
                "finding",
                subject,
                f"link trained at x{width_now} of x{width_max}: check the slot, the riser and the "
                "BIOS lane settings",
            )
        )
    if not ran:
        if gen_now and gen_max and gen_now < gen_max:
            out.append(
                _verdict(
                    "warning",
                    subject,
                    f"link reported at gen {gen_now} of {gen_max} (GPUs lower the link speed when "
                    "idle; the bandwidth test decides, and it did not run)",
                )
            )
        return out
    rates = {
        "host-to-device": pcie.get("h2d_gib_per_s"),
        "device-to-host": pcie.get("d2h_gib_per_s"),
    }
    if expected is None or not width_max:
        out.append(
            _verdict(
                "warning",
                subject,
                "the link's generation or width is unknown; "
                f"measured {', '.join(f'{_gib(v)} {k}' for k, v in rates.items())}",
            )
        )
        return out
    lane = PCIE_LANE_BYTES_PER_S[int(gen_max)]
    basis = (
        f"expected up to {expected:.1f} GiB/s per direction: {width_max} lanes x "
        f"{lane / 1e9:.3g} GB/s after {PCIE_ENCODING[int(gen_max)]} encoding"
    )
    slow = {k: v for k, v in rates.items() if v is not None and v < min_fraction * expected}
    for direction, value in slow.items():
        gen = pcie_rate_generation(value, int(width_max))
        out.append(
            _verdict(
                "finding",
                subject,
                f"x{width_max} gen {gen_max} link moves {value:.1f} GiB/s {direction}, "
                f"gen {gen} rates ({value / expected * 100:.0f}%; {basis}; "
                f"below {min_fraction:.0%} is a finding)",
            )
        )
    if not slow and all(v is not None for v in rates.values()):
        out.append(
            _verdict(
                "ok",
                subject,
                f"x{width_max} gen {gen_max} link: {rates['host-to-device']:.1f} GiB/s "
                f"host-to-device, {rates['device-to-host']:.1f} GiB/s device-to-host "
                f"({max(rates.values()) / expected * 100:.0f}% of {expected:.1f} GiB/s)",
            )
        )
    return out


def verdicts(
    document: Mapping[str, Any],
    settings: Mapping[str, Any],
    gpu_extra: Mapping[int, Mapping[str, Any]] | None = None,
    peer_gaps_: Sequence[tuple[int, int]] = (),
    sampler_reason: str | None = None,
) -> list[dict[str, str]]:
    """What was checked and what was found, one line each (severity, subject, message)."""
    out: list[dict[str, str]] = []
    gpu_extra = gpu_extra or {}
    memory = document["memory_bandwidth"]
    expected_memory = float(settings.get("memory_expected_gib_per_s") or 0)
    if memory.get("gib_per_s") is None:
        out.append(_verdict("warning", "host memory", f"not measured: {memory.get('reason')}"))
    else:
        what = (
            f"{memory['gib_per_s']:.1f} GiB/s ({memory['tool']} {memory['test']}, "
            f"{memory['threads']} threads, {_mb(memory['working_set_bytes'])} working set)"
        )
        fraction = float(settings.get("memory_min_fraction", 0.5))
        if expected_memory > 0 and memory["gib_per_s"] < fraction * expected_memory:
            out.append(
                _verdict(
                    "finding",
                    "host memory",
                    f"{what}: {memory['gib_per_s'] / expected_memory * 100:.0f}% of the "
                    f"{expected_memory:.1f} GiB/s it should reach "
                    f"(hardware_eval_memory_expected_gib_per_s; below {fraction:.0%} is a "
                    "finding): check that every memory channel is populated",
                )
            )
        else:
            out.append(_verdict("ok", "host memory", what))
    program = document["cuda_program"]
    gpus = document["gpus"]
    if gpus and not program.get("ran"):
        out.append(_verdict("warning", "cuda program", f"not run: {program.get('reason')}"))
    pcie_fraction = float(settings.get("pcie_min_fraction", 0.6))
    memory_fraction = float(settings.get("gpu_memory_min_fraction", 0.6))
    for gpu in gpus:
        out.extend(_pcie_verdicts(gpu, pcie_fraction, bool(program.get("ran"))))
        measured = gpu.get("memory_bandwidth_gib_per_s")
        theoretical = (gpu_extra.get(int(gpu["index"])) or {}).get("memory_theoretical_gib_per_s")
        subject = f"gpu {gpu['index']} memory"
        if measured is None:
            continue
        if theoretical and measured < memory_fraction * float(theoretical):
            out.append(
                _verdict(
                    "finding",
                    subject,
                    f"device memory moves {measured:.1f} GiB/s, "
                    f"{measured / theoretical * 100:.0f}% of the {theoretical:.1f} GiB/s its "
                    f"memory clock and bus width allow (below {memory_fraction:.0%} is a "
                    "finding): check clocks, ECC and thermal throttling",
                )
            )
        else:
            out.append(
                _verdict(
                    "ok",
                    subject,
                    f"device memory moves {measured:.1f} GiB/s"
                    + (
                        f" ({measured / theoretical * 100:.0f}% of {theoretical:.1f} GiB/s)"
                        if theoretical
                        else ""
                    ),
                )
            )
    for pair in document["p2p"]:
        out.append(
            _verdict(
                "ok",
                f"gpu {pair['from']} -> gpu {pair['to']}",
                f"peer-to-peer {pair['gib_per_s']:.1f} GiB/s",
            )
        )
    for source, target in peer_gaps_:
        out.append(
            _verdict(
                "warning",
                f"gpu {source} -> gpu {target}",
                "no peer access (cudaDeviceCanAccessPeer): copies between them are staged through "
                "host memory",
            )
        )
    if sampler_reason:
        out.append(_verdict("warning", "gpu sampling", sampler_reason))
    out.extend(
        sibling_verdicts(
            gpus,
            document["gpu_samples"],
            float(settings.get("sibling_temperature_delta_c", 10)),
            float(settings.get("sibling_slowdown", 0.15)),
        )
    )
    engine = document["engine"]
    if engine is None:
        out.append(
            _verdict(
                "warning",
                "engine",
                "no engine build is recorded on this host "
                "(ansible_local.blue_green): run site.yml first",
            )
        )
    elif engine["decode_tokens_per_s"] is None:
        out.append(_verdict("warning", "engine", f"{engine['build']}: {engine['fraction_note']}"))
    else:
        line = (
            f"{engine['build']}, {engine['model']}: decode {engine['decode_tokens_per_s']:.1f} "
            "tokens/s"
        )
        if engine["physical_limit_tokens_per_s"] is not None:
            line += (
                f"; physical limit {engine['physical_limit_tokens_per_s']:.1f} tokens/s "
                f"({_mb(engine['bytes_per_token'])} read per token)"
            )
        if engine["fraction_of_limit"] is not None:
            line += f", {engine['fraction_of_limit'] * 100:.0f}% of it"
        if engine["fraction_note"]:
            line += f"; no fraction: {engine['fraction_note']}"
        out.append(_verdict("ok", "engine", line))
    return out


def evaluation_document(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The whole ``llmfleet.hwevaluation/1`` document from what the role gathered and ran.

    ``inputs``: host, measured_at, key, facts (ansible_facts), cache (parse_cache_sysfs),
    memory: {plan, likwid, stress_ng, reason}, cuda: {compiled, nvcc_release, ran, stdout,
    reason}, samples: {stdout, rc, stderr, interval_ms, ran} (None: not sampled), engine (see
    :func:`engine_result`), settings (the verdicts' thresholds).
    """
    facts = inputs.get("facts") or {}
    hardware = facts.get("llmfleet_hardware") or {}
    cache = inputs.get("cache") or {}
    memory_in = inputs.get("memory") or {}
    memory = (
        memory_result(
            memory_in["plan"],
            memory_in.get("likwid"),
            memory_in.get("stress_ng"),
            memory_in.get("reason"),
        )
        if memory_in.get("plan")
        else {
            "tool": None,
            "test": None,
            "threads": None,
            "working_set_bytes": None,
            "gib_per_s": None,
            "reason": memory_in.get("reason") or "not measured",
        }
    )
    cuda_in = inputs.get("cuda") or {}
    program: dict[str, Any] | None = None
    ran = False
    reason = cuda_in.get("reason")
    if cuda_in.get("ran"):
        program = parse_cuda_program(cuda_in.get("stdout", ""))
        if "error" in program:
            status = cuda_in.get("rc")
            detail = (
                f" (exit status {status}: {_tail(cuda_in.get('stderr')) or 'no message'})"
                if status not in (None, 0, 1)
                else ""
            )
            reason = f"the CUDA program ran and failed: {program['error']}{detail}"
            program = None
        else:
            ran = True
            reason = None
    gpus, p2p, extra = gpus_result(hardware, program, reason)
    samples_in = inputs.get("samples")
    samples: list[dict[str, Any]] = []
    sampler_reason = None
    if samples_in and samples_in.get("ran"):
        samples = parse_gpu_samples(
            samples_in.get("stdout", ""), int(samples_in.get("interval_ms", 1000))
        )
        if not samples:
            said = _tail(samples_in.get("stderr")) or _tail(samples_in.get("stdout"))
            sampler_reason = (
                f"nvidia-smi gave no samples while the engine benchmark ran: {said or 'no output'}"
            )
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "host": inputs["host"],
        "measured_at": inputs["measured_at"],
        "key": dict(inputs["key"]),
        "cpu": cpu_summary(facts, hardware, cache),
        "memory_bandwidth": memory,
        "gpus": gpus,
        "p2p": p2p,
        "cuda_program": {
            "compiled": bool(cuda_in.get("compiled")),
            "nvcc_release": cuda_in.get("nvcc_release") or None,
            "ran": ran,
            "reason": reason if not ran else None,
        },
        "gpu_samples": samples,
        "engine": engine_result(inputs.get("engine"), memory, gpus, extra, cache.get("llc_bytes")),
    }
    document["verdicts"] = verdicts(
        document, inputs.get("settings") or {}, extra, peer_gaps(program), sampler_reason
    )
    return document


def failing_verdicts(document: Mapping[str, Any], fail_on: Sequence[str]) -> list[str]:
    """The verdicts whose severity the inventory fails on, as "subject: message" lines."""
    unknown = sorted(set(fail_on) - set(SEVERITIES) - {"ok"})
    if unknown or "ok" in fail_on:
        raise EvaluationError(
            f"hardware_eval_fail_on: {', '.join(map(str, fail_on))}; allowed: finding, warning"
        )
    return [
        f"{v['severity']}: {v['subject']}: {v['message']}"
        for v in document.get("verdicts") or []
        if v.get("severity") in fail_on
    ]


def verdict_lines(document: Mapping[str, Any]) -> list[str]:
    """The verdicts as lines to print, findings first."""
    order = {"finding": 0, "warning": 1, "ok": 2}
    ranked = sorted(document.get("verdicts") or [], key=lambda v: order.get(v.get("severity"), 3))
    return [f"{v['severity'].upper()} {v['subject']}: {v['message']}" for v in ranked]


class FilterModule:
    """llmfleet hardware evaluation filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "llmfleet_cache_sysfs": parse_cache_sysfs,
            "llmfleet_evaluation_key": evaluation_key,
            "llmfleet_memory_plan": memory_plan,
            "llmfleet_likwid_test": choose_likwid_test,
            "llmfleet_likwid_bench": parse_likwid_bench,
            "llmfleet_hwevaluation": evaluation_document,
            "llmfleet_evaluation_failures": failing_verdicts,
            "llmfleet_evaluation_lines": verdict_lines,
        }
