"""The hardware evaluation's parsers, against real output of the tools.

Captures in tests/captures/, made on the CI machine (an AMD EPYC KVM guest, 2 vCPUs, one
32 MiB L3, Debian 12) while other jobs ran on it, so the figures are low and that is fine:
the parsers are what is tested.

- sysfs-cpu0-cache.txt: ``grep -r . /sys/devices/system/cpu/cpu0/cache
  /sys/devices/system/cpu/online`` (what the role runs);
- likwid-bench-list.txt: ``likwid-bench -a`` (likwid 5.2.2); likwid-bench-copy_avx.txt:
  ``likwid-bench -t copy_avx -w N:1073741kB:2 -s 10``; likwid-bench-unknown-test.txt:
  ``likwid-bench -t copy_nonexistent -w N:1GB:2`` (stdout and stderr);
- stress-ng-stream.txt: ``stress-ng --stream 2 --stream-l3-size 89478K --metrics-brief -t 10s``
  (0.15.06; everything is on stderr); stress-ng-stream-too-short.txt: the same with ``-t 5s``;
- llama-bench-smollm2.json and llama-bench-smollm2-verbose.txt: ``llama-bench -m
  SmolLM2-135M-Instruct.Q4_1.gguf -o json -p 512 -n 64 -d 512 -r 2 -v`` (stdout, and stderr
  without its 3,200 per-tensor and per-graph lines: ``grep -v -E '^(llama_graph_n_input_tensors|
  create_tensor|llama_model_loader: - kv|llama_model_loader: - type|llama_kv_cache: layer|
  load_tensors: layer|graph_reserve|sched_reserve: )'``; llama.cpp of llama-cpp-python 0.3.36,
  CPU build, GGML_NATIVE=OFF), and llama-bench-smollm2-decode.json: ``-p 0 -n 64 -r 2``.

The nvidia-smi time series is read from the shared real captures (skipped without them).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from helpers import load_module_file

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO / "tests" / "captures"
PLUGIN = REPO / "plugins" / "filter" / "llmfleet_evaluation.py"
ev = load_module_file("llmfleet_evaluation_filters", PLUGIN)

SHARED = Path(
    os.environ.get("LLMFLEET_SHARED_FIXTURES") or REPO.parent / "shared" / "fixtures" / "nvidia-smi"
)
GIB = 1024**3


def capture(name: str) -> str:
    return (CAPTURES / name).read_text(encoding="utf-8")


# -- sysfs: the last-level cache -------------------------------------------------------------------


def test_the_llc_of_the_ci_machine() -> None:
    assert ev.parse_cache_sysfs(capture("sysfs-cpu0-cache.txt")) == {
        "llc_bytes": 32 * 1024**2,
        "llc_level": 3,
        "llc_instance_bytes": 32 * 1024**2,
        "llc_instances": 1,
    }


def test_an_l3_per_ccd_counts_once_per_instance() -> None:
    """An EPYC with 16 threads per L3 and 128 online: 8 L3s of 32 MiB."""
    text = "\n".join(
        [
            "/sys/devices/system/cpu/cpu0/cache/index2/level:2",
            "/sys/devices/system/cpu/cpu0/cache/index2/type:Unified",
            "/sys/devices/system/cpu/cpu0/cache/index2/size:1024K",
            "/sys/devices/system/cpu/cpu0/cache/index3/level:3",
            "/sys/devices/system/cpu/cpu0/cache/index3/type:Unified",
            "/sys/devices/system/cpu/cpu0/cache/index3/size:32768K",
            "/sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list:0-7,64-71",
            "/sys/devices/system/cpu/online:0-127",
        ]
    )
    cache = ev.parse_cache_sysfs(text)
    assert (cache["llc_instances"], cache["llc_bytes"]) == (8, 256 * 1024**2)


def test_an_instruction_cache_is_never_the_llc() -> None:
    text = (
        "/sys/devices/system/cpu/cpu0/cache/index0/level:1\n"
        "/sys/devices/system/cpu/cpu0/cache/index0/type:Instruction\n"
        "/sys/devices/system/cpu/cpu0/cache/index0/size:64K\n"
        "/sys/devices/system/cpu/cpu0/cache/index1/level:1\n"
        "/sys/devices/system/cpu/cpu0/cache/index1/type:Data\n"
        "/sys/devices/system/cpu/cpu0/cache/index1/size:48K\n"
    )
    assert ev.parse_cache_sysfs(text)["llc_bytes"] == 48 * 1024


@pytest.mark.parametrize("text", ["", "grep: /sys/devices/system/cpu/cpu0/cache: No such file"])
def test_no_cache_is_an_error_naming_sysfs(text: str) -> None:
    with pytest.raises(ev.EvaluationError, match="cpu0/cache"):
        ev.parse_cache_sysfs(text)


@pytest.mark.parametrize(
    ("text", "count"), [("0", 1), ("0-1", 2), ("0-3,8-11", 8), ("0,2,4", 3), ("0-127\n", 128)]
)
def test_cpu_lists(text: str, count: int) -> None:
    assert ev.cpu_list_count(text) == count


def test_sizes() -> None:
    assert [ev.size_bytes(t) for t in ("32768K", "32M", "1G", "512")] == [
        32 * 1024**2,
        32 * 1024**2,
        1024**3,
        512,
    ]
    with pytest.raises(ev.EvaluationError, match="'32 MB!' is not a size"):
        ev.size_bytes("32 MB!")


# -- the working set -------------------------------------------------------------------------------


def test_the_plan_on_the_ci_machine() -> None:
    plan = ev.memory_plan(32 * 1024**2, 2)
    assert plan["working_set_bytes"] == GIB  # the 1 GiB floor: 4 x 32 MiB is less
    assert plan["likwid_size"] == "1073741kB"  # likwid-bench's kB are 10^3 bytes
    # stress-ng gives each of its instances three arrays of 4 x (size / instances): 12 x size
    assert plan["stress_ng_l3_size"] == "87381K"
    assert plan["stress_ng_working_set_bytes"] == 87381 * 1024 * 12
    assert plan["exceeds_llc"] is True


def test_a_large_llc_sets_the_working_set() -> None:
    plan = ev.memory_plan(768 * 1024**2, 192, factor=4, minimum_bytes=GIB)
    assert plan["working_set_bytes"] == 3 * GIB


def test_the_working_set_stays_below_a_quarter_of_memory() -> None:
    plan = ev.memory_plan(32 * 1024**2, 2, minimum_bytes=8 * GIB, memory_total_bytes=8 * GIB)
    assert plan["working_set_bytes"] == 2 * GIB


def test_no_thread_is_an_error() -> None:
    with pytest.raises(ev.EvaluationError, match="threads is 0"):
        ev.memory_plan(1024, 0)


# -- likwid-bench ----------------------------------------------------------------------------------


def test_likwid_lists_its_tests() -> None:
    tests = ev.likwid_tests(capture("likwid-bench-list.txt"))
    assert {"copy", "copy_avx", "copy_avx512", "copy_sse", "load_avx", "stream_mem_avx"} <= set(
        tests
    )
    assert (
        ev.choose_likwid_test(capture("likwid-bench-list.txt"), ["copy_avx", "copy"]) == "copy_avx"
    )
    assert ev.choose_likwid_test(capture("likwid-bench-list.txt"), ["copy_neon", "copy"]) == "copy"
    assert ev.choose_likwid_test(capture("likwid-bench-list.txt"), ["copy_neon"]) is None
    assert ev.choose_likwid_test("", ["copy_avx"]) is None


def test_likwid_copy_avx() -> None:
    parsed = ev.parse_likwid_bench(capture("likwid-bench-copy_avx.txt"))
    assert parsed == {
        "test": "copy_avx",
        "threads": 2,
        "working_set_bytes": 1073740800,
        # MByte/s: 8424.47 x 10^6 bytes per second
        "gib_per_s": round(8424.47e6 / GIB, 3),
        "reason": None,
    }
    assert parsed["gib_per_s"] == pytest.approx(7.846, abs=0.001)


def test_likwid_unknown_test_is_a_reason() -> None:
    parsed = ev.parse_likwid_bench(capture("likwid-bench-unknown-test.txt"))
    assert parsed["gib_per_s"] is None
    assert parsed["reason"] == "likwid-bench: Error: Unknown test case copy_nonexistent"


@pytest.mark.parametrize(
    "text",
    [
        # likwid's own words on CPUs it does not know (RRZE-HPC/likwid issues #92 and #300)
        "ERROR - [./src/cpuid.c:689] Processor is not supported",
        "ERROR - [./src/perfmon.c:1216] Unsupported Processor",
    ],
)
def test_likwid_on_an_unsupported_cpu_is_a_reason(text: str) -> None:
    parsed = ev.parse_likwid_bench(text)
    assert parsed["gib_per_s"] is None
    assert parsed["reason"] == f"likwid-bench: {text}"


def test_likwid_without_a_rate_is_a_reason() -> None:
    cut = capture("likwid-bench-copy_avx.txt").split("MByte/s")[0]
    assert ev.parse_likwid_bench(cut)["reason"].startswith("likwid-bench printed no MByte/s")


# -- stress-ng -------------------------------------------------------------------------------------


def test_stress_ng_stream_sums_reads_and_writes_of_every_instance() -> None:
    parsed = ev.parse_stress_ng_stream(capture("stress-ng-stream.txt"))
    read = 3533.39 + 3590.90
    write = 2355.59 + 2393.93
    assert parsed == {
        "instances": 2,
        "read_mib_per_s": round(read, 2),
        "write_mib_per_s": round(write, 2),
        # stress-ng's MB is 2^20 bytes
        "gib_per_s": round((read + write) / 1024, 3),
        "reason": None,
    }


def test_stress_ng_metrics_lines_alone_give_the_rate() -> None:
    """Without the per-instance lines, the --metrics means times the instances."""
    text = "\n".join(
        line for line in capture("stress-ng-stream.txt").splitlines() if "memory rate:" not in line
    )
    parsed = ev.parse_stress_ng_stream(text)
    assert parsed["instances"] == 2
    assert parsed["gib_per_s"] == pytest.approx((3562.03 + 2374.69) * 2 / 1024, abs=0.001)


def test_stress_ng_newer_metric_wording() -> None:
    text = (
        "stress-ng: metrc: [9] stream   1000.00 MB per sec memory read rate "
        "(harmonic mean of 4 instances)\n"
        "stress-ng: metrc: [9] stream    500.00 MB per sec memory write rate "
        "(harmonic mean of 4 instances)\n"
    )
    assert ev.parse_stress_ng_stream(text)["gib_per_s"] == pytest.approx(6000 / 1024, abs=0.001)


def test_stress_ng_too_short_is_a_reason_that_says_what_to_raise() -> None:
    parsed = ev.parse_stress_ng_stream(capture("stress-ng-stream-too-short.txt"))
    assert parsed["gib_per_s"] is None
    assert parsed["reason"] == (
        "stress-ng: run duration too short to determine memory rate "
        "(raise hardware_eval_memory_seconds)"
    )


def test_memory_result_prefers_likwid_and_falls_back_to_stress_ng() -> None:
    plan = ev.memory_plan(32 * 1024**2, 2)
    likwid = {
        "test": "copy_avx",
        "rc": 0,
        "stdout": capture("likwid-bench-copy_avx.txt"),
        "stderr": "",
    }
    stress = {"rc": 0, "stdout": "", "stderr": capture("stress-ng-stream.txt")}
    chosen = ev.memory_result(plan, likwid, stress)
    assert (chosen["tool"], chosen["test"], chosen["threads"]) == ("likwid-bench", "copy_avx", 2)
    unsupported = {**likwid, "rc": 1, "stdout": "ERROR - Processor is not supported"}
    fallback = ev.memory_result(plan, unsupported, stress)
    assert (fallback["tool"], fallback["test"], fallback["reason"]) == ("stress-ng", "stream", None)
    assert fallback["working_set_bytes"] == plan["stress_ng_working_set_bytes"]
    short = {"rc": 0, "stdout": "", "stderr": capture("stress-ng-stream-too-short.txt")}
    neither = ev.memory_result(plan, unsupported, short)
    assert neither["gib_per_s"] is None
    assert neither["reason"] == (
        "likwid-bench: ERROR - Processor is not supported; stress-ng: run duration too short to "
        "determine memory rate (raise hardware_eval_memory_seconds)"
    )


# -- llama-bench -----------------------------------------------------------------------------------


def test_llama_bench_decode_and_prefill() -> None:
    parsed = ev.parse_llama_bench(capture("llama-bench-smollm2.json"))
    tests = json.loads(capture("llama-bench-smollm2.json"))
    decode = next(t for t in tests if t["n_gen"] > 0)
    prefill = next(t for t in tests if t["n_prompt"] > 0)
    assert parsed["decode_tokens_per_s"] == round(decode["avg_ts"], 2)
    assert parsed["prefill_tokens_per_s"] == round(prefill["avg_ts"], 2)
    assert (parsed["n_gen"], parsed["n_depth"], parsed["n_prompt"]) == (64, 512, 512)
    assert parsed["model_size"] == decode["model_size"]
    assert parsed["backends"] == "CPU"


def test_llama_bench_decode_only() -> None:
    parsed = ev.parse_llama_bench(capture("llama-bench-smollm2-decode.json"))
    assert parsed["decode_tokens_per_s"] > 0
    assert parsed["prefill_tokens_per_s"] is None
    assert parsed["n_depth"] == 0


@pytest.mark.parametrize("text", ["", "[]", "main: error: failed to load model", "[{"])
def test_llama_bench_without_results_is_an_error(text: str) -> None:
    with pytest.raises(ev.EvaluationError, match="llama-bench printed no"):
        ev.parse_llama_bench(text)


def test_the_kv_cache_per_token_from_the_verbose_log() -> None:
    log = capture("llama-bench-smollm2-verbose.txt")
    size, cells = next(
        (float(m.group(1)), int(m.group(2)))
        for m in [re.search(r"size =\s+([0-9.]+) MiB \(\s*(\d+) cells", log)]
        if m
    )
    per_token = ev.parse_kv_cache_bytes_per_token(log)
    assert per_token == round(size * 1024**2 / cells)
    # SmolLM2-135M: 30 layers x 3 KV heads x 64 dims x (K + V) x 2 bytes (f16)
    assert per_token == 30 * 3 * 64 * 2 * 2


def test_no_kv_line_is_none() -> None:
    assert ev.parse_kv_cache_bytes_per_token("llama_model_loader: loaded meta data") is None


# -- the CUDA program's document -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "error"),
    [
        ("", "the CUDA program printed nothing"),
        ("Segmentation fault", "the CUDA program printed no JSON: Segmentation fault"),
        ("[1]", "the CUDA program printed JSON that is not an object"),
        ('{"program": "x"}', "the CUDA program's JSON has no devices list"),
        (
            '{"error": "cudaGetDeviceCount(&count): CUDA driver version is insufficient for CUDA '
            'runtime version (cudaErrorInsufficientDriver)"}',
            "cudaGetDeviceCount(&count): CUDA driver version is insufficient for CUDA runtime "
            "version (cudaErrorInsufficientDriver)",
        ),
    ],
)
def test_cuda_program_failures_are_reasons(stdout: str, error: str) -> None:
    assert ev.parse_cuda_program(stdout) == {"error": error}


# -- nvidia-smi's time series ----------------------------------------------------------------------


def test_sampled_rows_become_a_time_series() -> None:
    text = (
        "0, 97, 1234, 81920, 60, 250.12, 1410\n"
        "1, 95, 1200, 81920, 62, [N/A], 1395\n"
        "0, 98, 1234, 81920, 61, 251.00, 1410\n"
        "1, 96, 1200, 81920, 63, 249.50, [Not Supported]\n"
        "1, 96, 12\n"  # a row cut off when the sampler was stopped
    )
    samples = ev.parse_gpu_samples(text, 500)
    assert [(s["t"], s["gpu"]) for s in samples] == [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)]
    assert samples[0] == {
        "t": 0.0,
        "gpu": 0,
        "utilization_percent": 97.0,
        "memory_used_mib": 1234,
        "memory_total_mib": 81920,
        "temperature_c": 60.0,
        "power_w": 250.12,
        "sm_clock_mhz": 1410,
    }
    assert samples[1]["power_w"] is None and samples[3]["sm_clock_mhz"] is None


def test_a_field_the_driver_refuses_gives_no_sample() -> None:
    """The project's nvidia-smi double answers as an old driver does for a missing field."""
    assert ev.parse_gpu_samples('Field "clocks.sm" is not a valid field to query.\n') == []


_ALIASES = {
    "clocks.sm": ("clocks.sm", "clocks.current.sm"),
    "power.draw": ("power.draw", "power.draw.instant", "power.draw.average"),
}


def _as_sampled(path: Path) -> str | None:
    """A real `--query-gpu ... --format=csv` capture as the role's sampler prints it
    (SAMPLE_FIELDS in order, csv,noheader,nounits); None when it lacks a field."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    header = [re.sub(r"\s*\[.*\]$", "", cell.strip()) for cell in lines[0].split(",")]
    rows = []
    for number, line in enumerate(lines[1:]):
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != len(header):
            return None
        values = []
        for field in ev.SAMPLE_FIELDS:
            names = _ALIASES.get(field, (field,))
            column = next((header.index(n) for n in names if n in header), None)
            if column is None and field == "index":
                values.append(str(number))
                continue
            if column is None:
                return None
            values.append(re.sub(r"\s+(MiB|MHz|W|%)$", "", cells[column]))
        rows.append(", ".join(values))
    return "\n".join(rows) + "\n"


SAMPLED = sorted(SHARED.rglob("*.csv")) if SHARED.is_dir() else []


@pytest.mark.skipif(not SAMPLED, reason=f"shared nvidia-smi captures not found at {SHARED}")
@pytest.mark.parametrize("path", SAMPLED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_query_gpu_captures_parse(path: Path) -> None:
    text = _as_sampled(path)
    if text is None:
        pytest.skip(f"{path.name} lacks one of {', '.join(ev.SAMPLE_FIELDS)}")
    samples = ev.parse_gpu_samples(text)
    assert len(samples) == len(text.splitlines())
    for sample in samples:
        assert sample["memory_total_mib"] is None or sample["memory_total_mib"] > 0
        assert sample["utilization_percent"] is None or 0 <= sample["utilization_percent"] <= 100
        assert sample["sm_clock_mhz"] is None or sample["sm_clock_mhz"] > 0


@pytest.mark.skipif(not SAMPLED, reason=f"shared nvidia-smi captures not found at {SHARED}")
def test_eight_h100s_sampled_once_each() -> None:
    path = next((p for p in SAMPLED if p.name == "query-gpu-8xH100.csv"), None)
    if path is None:
        pytest.skip("query-gpu-8xH100.csv is not among the shared captures")
    text = _as_sampled(path)
    assert text is not None
    samples = ev.parse_gpu_samples(text)
    assert [s["gpu"] for s in samples] == list(range(8))
    assert {s["t"] for s in samples} == {0.0}
    assert samples[0]["sm_clock_mhz"] == 345
    assert samples[0]["memory_total_mib"] == 81559
