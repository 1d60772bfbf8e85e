"""The hardware evaluation's decisions: PCIe expectations, the physical limit of decode and the
cache note, verdicts, the key, and the whole document against its JSON Schema
(src/llmfleet/schemas/hwevaluation-1.json, schema llmfleet.hwevaluation/1)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import load_module_file

from llmfleet.validation import check, compile_schema

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO / "tests" / "captures"
SCHEMA_FILE = REPO / "src" / "llmfleet" / "schemas" / "hwevaluation-1.json"
PLUGIN = REPO / "plugins" / "filter" / "llmfleet_evaluation.py"
ev = load_module_file("llmfleet_evaluation_filters", PLUGIN)

GIB = 1024**3
MIB = 1024**2
SMOLLM2_FILE_BYTES = 98362432
SETTINGS = {
    "memory_expected_gib_per_s": 0.0,
    "memory_min_fraction": 0.5,
    "pcie_min_fraction": 0.6,
    "gpu_memory_min_fraction": 0.6,
    "sibling_temperature_delta_c": 10.0,
    "sibling_slowdown": 0.15,
}


def capture(name: str) -> str:
    return (CAPTURES / name).read_text(encoding="utf-8")


def validate(document: dict[str, Any]) -> None:
    validator = compile_schema(json.loads(SCHEMA_FILE.read_text()))
    problems = check(validator, json.loads(json.dumps(document)))
    assert problems == [], problems


def gpu_fact(
    index: int,
    name: str = "NVIDIA A100-SXM4-80GB",
    gen: int = 4,
    width: int = 16,
    gen_now: int | None = None,
    width_now: int | None = None,
) -> dict[str, Any]:
    return {
        "index": index,
        "name": name,
        "uuid": f"GPU-{index:08x}-0000-0000-0000-000000000000",
        "pci_bus_id": f"0000:{0x17 + index:02x}:00.0",
        "memory_total_mib": 81920,
        "pcie_gen_max": gen,
        "pcie_gen_current": gen if gen_now is None else gen_now,
        "pcie_width_max": width,
        "pcie_width_current": width if width_now is None else width_now,
    }


def facts(gpus: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Ansible's facts of a host like the CI machine (2 vCPUs, one 32 MiB L3), with gpus."""
    gpus = gpus or []
    return {
        "processor": ["0", "AuthenticAMD", "AMD EPYC", "1", "AuthenticAMD", "AMD EPYC"],
        "processor_count": 1,
        "processor_cores": 2,
        "processor_threads_per_core": 1,
        "processor_vcpus": 2,
        "processor_nproc": 2,
        "memtotal_mb": 24105,
        "llmfleet_hardware": {
            "driver_loaded": bool(gpus),
            "gpu_count": len(gpus),
            "gpus": gpus,
            "memory_total_mib": 24105,
            "cpu_cores": 2,
            "numa_nodes": 1,
        },
    }


CACHE = {"llc_bytes": 32 * MIB, "llc_level": 3, "llc_instance_bytes": 32 * MIB, "llc_instances": 1}
KEY = {"hardware": "0" * 64, "engine_build": "llama-0.3.36-cpu-abc", "model_sha256": "f" * 64}
MODEL = {
    "name": "SmolLM2-135M-Instruct",
    "path": "/data/models/SmolLM2/x.gguf",
    "sha256": "f" * 64,
    "size": SMOLLM2_FILE_BYTES,
}


def program(
    rates: dict[int, dict[str, float]], peers: list[tuple[int, int, bool, float | None]]
) -> str:
    """The CUDA program's stdout for GPUs with these rates (h2d, d2h, d2d, theoretical)."""
    devices = [
        {
            "index": i,
            "name": "NVIDIA A100-SXM4-80GB",
            "uuid": f"GPU-{i}",
            "pci_bus_id": f"0000:{0x17 + i:02X}:00.0",
            "memory_clock_khz": 1593000,
            "memory_bus_width_bits": 5120,
            "memory_theoretical_gib_per_s": r.get("theoretical", 1898.9),
            "l2_cache_bytes": 41943040,
            "h2d": [
                {"bytes": MIB, "gib_per_s": r["h2d"] / 2},
                {"bytes": 256 * MIB, "gib_per_s": r["h2d"]},
            ],
            "d2h": [{"bytes": 256 * MIB, "gib_per_s": r["d2h"]}],
            "d2d": [{"bytes": 256 * MIB, "gib_per_s": r["d2d"]}],
        }
        for i, r in rates.items()
    ]
    p2p = [{"from": a, "to": b, "peer_access": ok, "gib_per_s": v} for a, b, ok, v in peers]
    return json.dumps(
        {
            "program": "llmfleet-gpu-bandwidth",
            "version": 1,
            "cuda_runtime": 11080,
            "cuda_driver": 12020,
            "iterations": 10,
            "devices": devices,
            "p2p": p2p,
        }
    )


def cpu_inputs(**changes: Any) -> dict[str, Any]:
    """What the role gathers on a CPU host: the real captures of this machine."""
    inputs = {
        "host": "fl-cpu",
        "measured_at": "2026-11-30T05:00:00Z",
        "key": KEY,
        "facts": facts(),
        "cache": CACHE,
        "memory": {
            "plan": ev.memory_plan(32 * MIB, 2),
            "likwid": {
                "test": "copy_avx",
                "rc": 0,
                "stdout": capture("likwid-bench-copy_avx.txt"),
                "stderr": "",
            },
            "stress_ng": None,
        },
        "cuda": {"compiled": False, "ran": False, "reason": "not measured"},
        "samples": None,
        "engine": {
            "build": KEY["engine_build"],
            "model": MODEL,
            "depth": 512,
            "rc": 0,
            "stdout": capture("llama-bench-smollm2.json"),
            "stderr": capture("llama-bench-smollm2-verbose.txt"),
        },
        "settings": SETTINGS,
    }
    inputs.update(changes)
    return inputs


# -- PCIe ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gen", "width", "gib"),
    [
        (1, 1, 250e6 / GIB),  # 2.5 GT/s, 8b/10b: 250 MB/s a lane
        (2, 16, 16 * 500e6 / GIB),
        (3, 16, 16 * 8e9 * 128 / 130 / 8 / GIB),  # 984.6 MB/s a lane: 14.67 GiB/s
        (4, 16, 16 * 16e9 * 128 / 130 / 8 / GIB),  # 29.34 GiB/s
        (4, 8, 8 * 16e9 * 128 / 130 / 8 / GIB),
        (5, 16, 16 * 32e9 * 128 / 130 / 8 / GIB),  # 3.938 GB/s a lane: 58.68 GiB/s
        (6, 16, 16 * 64e9 * 242 / 256 / 8 / GIB),
    ],
)
def test_expected_pcie_per_direction(gen: int, width: int, gib: float) -> None:
    assert ev.pcie_expected_gib_per_s(gen, width) == pytest.approx(gib, abs=0.001)


@pytest.mark.parametrize(("gen", "width"), [(None, 16), (4, None), (7, 16), (4, 0)])
def test_unknown_links_have_no_expectation(gen: int | None, width: int | None) -> None:
    assert ev.pcie_expected_gib_per_s(gen, width) is None


@pytest.mark.parametrize(
    ("gib", "width", "gen"), [(8.1, 16, 3), (7.0, 16, 2), (13.0, 16, 3), (22.1, 16, 4), (40, 16, 5)]
)
def test_the_generation_a_rate_belongs_to(gib: float, width: int, gen: int) -> None:
    assert ev.pcie_rate_generation(gib, width) == gen


def _gpu_document(
    gpus: list[dict[str, Any]], stdout: str | None, samples: str = "", **changes: Any
) -> dict[str, Any]:
    inputs = cpu_inputs(
        host="gpu-01",
        facts=facts(gpus),
        cuda={
            "compiled": True,
            "nvcc_release": "11.8",
            "ran": stdout is not None,
            "stdout": stdout or "",
            "rc": 0,
            "reason": None,
        },
        samples={"ran": True, "interval_ms": 1000, "stdout": samples, "stderr": ""},
    )
    inputs.update(changes)
    document = ev.evaluation_document(inputs)
    validate(document)
    return document


def verdicts_of(document: dict[str, Any], subject: str) -> list[tuple[str, str]]:
    return [(v["severity"], v["message"]) for v in document["verdicts"] if v["subject"] == subject]


def test_a_gen4_link_at_gen3_rates_is_a_finding() -> None:
    stdout = program({0: {"h2d": 8.1, "d2h": 12.2, "d2d": 1500.0}}, [])
    document = _gpu_document([gpu_fact(0)], stdout)
    (gpu,) = document["gpus"]
    assert gpu["pcie"] == {
        "gen_current": 4,
        "gen_max": 4,
        "width_current": 16,
        "width_max": 16,
        "expected_gib_per_s": 29.344,
        "h2d_gib_per_s": 8.1,
        "d2h_gib_per_s": 12.2,
    }
    found = verdicts_of(document, "gpu 0 pcie")
    assert [severity for severity, _ in found] == ["finding", "finding"]
    assert found[0][1].startswith("x16 gen 4 link moves 8.1 GiB/s host-to-device, gen 3 rates (28%")
    assert "16 lanes x 1.97 GB/s after 128b/130b encoding" in found[0][1]
    assert found[1][1].startswith("x16 gen 4 link moves 12.2 GiB/s device-to-host, gen 3 rates")


def test_a_healthy_link_is_an_ok_line() -> None:
    stdout = program({0: {"h2d": 22.1, "d2h": 23.0, "d2d": 1500.0}}, [])
    document = _gpu_document([gpu_fact(0)], stdout)
    assert verdicts_of(document, "gpu 0 pcie") == [
        (
            "ok",
            "x16 gen 4 link: 22.1 GiB/s host-to-device, 23.0 GiB/s device-to-host "
            "(78% of 29.3 GiB/s)",
        )
    ]


def test_a_narrow_link_is_a_finding_even_unmeasured() -> None:
    document = _gpu_document(
        [gpu_fact(0, width_now=8, gen_now=1)],
        None,
        cuda={
            "compiled": True,
            "nvcc_release": "11.8",
            "ran": False,
            "reason": "no NVIDIA driver answers",
        },
    )
    found = verdicts_of(document, "gpu 0 pcie")
    assert found[0][0] == "finding" and found[0][1].startswith("link trained at x8 of x16")
    # an idle link at gen 1 is a doubt, not a finding, while the bandwidth test did not run
    assert found[1][0] == "warning" and "gen 1 of 4" in found[1][1]
    assert verdicts_of(document, "cuda program") == [
        ("warning", "not run: no NVIDIA driver answers")
    ]
    assert document["gpus"][0]["reason"] == "no NVIDIA driver answers"


def test_a_program_that_fails_in_a_container_is_recorded_not_raised() -> None:
    failed = json.dumps(
        {
            "program": "llmfleet-gpu-bandwidth",
            "version": 1,
            "error": "cudaGetDeviceCount(&count): no CUDA-capable device is detected "
            "(cudaErrorNoDevice)",
        }
    )
    document = _gpu_document([gpu_fact(0, name="NVIDIA GeForce RTX 3060")], failed)
    assert document["cuda_program"] == {
        "compiled": True,
        "nvcc_release": "11.8",
        "ran": False,
        "reason": "the CUDA program ran and failed: cudaGetDeviceCount(&count): no CUDA-capable "
        "device is detected (cudaErrorNoDevice)",
    }
    assert document["gpus"][0]["memory_bandwidth_gib_per_s"] is None
    assert document["gpus"][0]["reason"] == document["cuda_program"]["reason"]


def test_device_memory_below_what_the_part_allows_is_a_finding() -> None:
    stdout = program({0: {"h2d": 22.0, "d2h": 23.0, "d2d": 700.0, "theoretical": 1898.9}}, [])
    document = _gpu_document([gpu_fact(0)], stdout)
    ((severity, message),) = verdicts_of(document, "gpu 0 memory")
    assert severity == "finding"
    assert message.startswith("device memory moves 700.0 GiB/s, 37% of the 1898.9 GiB/s")


def test_peers_are_listed_and_gaps_are_warnings() -> None:
    rates = {i: {"h2d": 22.0, "d2h": 23.0, "d2d": 1500.0} for i in (0, 1)}
    stdout = program(rates, [(0, 1, True, 45.2), (1, 0, False, None)])
    document = _gpu_document([gpu_fact(0), gpu_fact(1)], stdout)
    assert document["p2p"] == [{"from": 0, "to": 1, "gib_per_s": 45.2}]
    assert verdicts_of(document, "gpu 0 -> gpu 1") == [("ok", "peer-to-peer 45.2 GiB/s")]
    assert verdicts_of(document, "gpu 1 -> gpu 0")[0][0] == "warning"


def test_gpus_are_matched_by_bus_id_not_cuda_order() -> None:
    """CUDA may number GPUs fastest first; the facts' index is nvidia-smi's."""
    stdout = json.loads(
        program(
            {
                0: {"h2d": 10.0, "d2h": 10.0, "d2d": 1000.0},
                1: {"h2d": 20.0, "d2h": 20.0, "d2d": 1500.0},
            },
            [],
        )
    )
    stdout["devices"][0]["pci_bus_id"], stdout["devices"][1]["pci_bus_id"] = (
        "0000:18:00.0",
        "0000:17:00.0",
    )
    gpus, _, _ = ev.gpus_result(
        facts([gpu_fact(0), gpu_fact(1)])["llmfleet_hardware"], stdout, None
    )
    assert [g["pcie"]["h2d_gib_per_s"] for g in gpus] == [20.0, 10.0]


# -- siblings --------------------------------------------------------------------------------------


def _samples(rows: dict[int, list[tuple[float, float, int]]]) -> str:
    """Rows (utilization, temperature, sm clock) per GPU, interleaved as nvidia-smi prints them."""
    ticks = max(len(v) for v in rows.values())
    lines = []
    for tick in range(ticks):
        for gpu, values in rows.items():
            util, temp, clock = values[tick]
            lines.append(f"{gpu}, {util}, 40000, 81920, {temp}, 300.0, {clock}")
    return "\n".join(lines) + "\n"


def test_a_gpu_hotter_than_its_siblings_is_a_finding() -> None:
    rates = {i: {"h2d": 22.0, "d2h": 23.0, "d2d": 1500.0} for i in range(4)}
    samples = _samples(
        {
            0: [(95, 61, 1410), (97, 66, 1410)],
            1: [(96, 62, 1410), (97, 67, 1410)],
            2: [(95, 70, 1400), (98, 83, 1380)],
            3: [(95, 60, 1410), (96, 65, 1410)],
        }
    )
    document = _gpu_document([gpu_fact(i) for i in range(4)], program(rates, []), samples)
    assert len(document["gpu_samples"]) == 8
    assert verdicts_of(document, "gpu 2 temperature") == [
        (
            "finding",
            "gpu 2 (NVIDIA A100-SXM4-80GB) reached 83 °C during the engine benchmark, 17 °C "
            "above its siblings' median (66 °C): check its airflow, fans and thermal paste",
        )
    ]
    assert not [v for v in document["verdicts"] if v["subject"] == "gpu 0 temperature"]


def test_a_gpu_slower_than_its_siblings_is_a_finding() -> None:
    rates = {i: {"h2d": 22.0, "d2h": 23.0, "d2d": 1500.0} for i in range(3)}
    rates[1] = {"h2d": 22.0, "d2h": 23.0, "d2d": 1200.0}
    samples = _samples({0: [(99, 60, 1410)], 1: [(99, 60, 1005)], 2: [(99, 60, 1410)]})
    document = _gpu_document([gpu_fact(i) for i in range(3)], program(rates, []), samples)
    subjects = {v["subject"] for v in document["verdicts"] if v["severity"] == "finding"}
    assert subjects == {"gpu 1 device memory bandwidth", "gpu 1 SM clock under load"}


def test_gpus_of_different_models_are_not_siblings() -> None:
    rates = {
        0: {"h2d": 22.0, "d2h": 23.0, "d2d": 1500.0},
        1: {"h2d": 12.0, "d2h": 12.0, "d2d": 300.0},
    }
    gpus = [gpu_fact(0), gpu_fact(1, name="NVIDIA T4", gen=3)]
    document = _gpu_document(gpus, program(rates, []))
    assert not [v for v in document["verdicts"] if "siblings" in v["message"]]


def test_a_sampler_that_gave_nothing_is_a_warning() -> None:
    document = _gpu_document(
        [gpu_fact(0)], None, 'Field "clocks.sm" is not a valid field to query.\n'
    )
    assert document["gpu_samples"] == []
    assert verdicts_of(document, "gpu sampling") == [
        (
            "warning",
            'nvidia-smi gave no samples while the engine benchmark ran: Field "clocks.sm" is '
            "not a valid field to query.",
        )
    ]


# -- the physical limit ----------------------------------------------------------------------------


def test_the_cpu_hosts_document_from_real_output() -> None:
    document = ev.evaluation_document(cpu_inputs())
    validate(document)
    assert document["cpu"] == {
        "model": "AMD EPYC",
        "sockets": 1,
        "cores": 2,
        "threads": 2,
        "numa_nodes": 1,
        "llc_bytes": 32 * MIB,
    }
    assert document["memory_bandwidth"] == {
        "tool": "likwid-bench",
        "test": "copy_avx",
        "threads": 2,
        "working_set_bytes": 1073740800,
        "gib_per_s": 7.846,
        "reason": None,
    }
    assert (document["gpus"], document["p2p"], document["gpu_samples"]) == ([], [], [])
    engine = document["engine"]
    bench = json.loads(capture("llama-bench-smollm2.json"))
    decode = next(t for t in bench if t["n_gen"] > 0)
    kv = 30 * 3 * 64 * 2 * 2
    assert engine["model_bytes"] == decode["model_size"]
    assert (engine["kv_bytes_per_token"], engine["context_tokens"]) == (kv, 512 + 32)
    assert engine["bytes_per_token"] == decode["model_size"] + kv * 544
    limit = 7.846 * GIB / engine["bytes_per_token"]
    assert engine["physical_limit_tokens_per_s"] == pytest.approx(limit, abs=0.01)
    # the model (about 90 MB) does not fit in a 32 MiB L3: the fraction means something
    assert engine["fraction_note"] is None
    assert engine["fraction_of_limit"] == pytest.approx(decode["avg_ts"] / limit, abs=0.001)
    assert verdicts_of(document, "host memory") == [
        ("ok", "7.8 GiB/s (likwid-bench copy_avx, 2 threads, 1073.7 MB working set)")
    ]
    ((severity, line),) = verdicts_of(document, "engine")
    assert severity == "ok" and "physical limit" in line and "% of it" in line


def test_a_model_that_fits_in_the_llc_has_no_fraction() -> None:
    big_cache = {**CACHE, "llc_bytes": 256 * MIB, "llc_instances": 8}
    document = ev.evaluation_document(cpu_inputs(cache=big_cache))
    validate(document)
    engine = document["engine"]
    assert engine["physical_limit_tokens_per_s"] is not None
    assert engine["fraction_of_limit"] is None
    assert engine["fraction_note"].startswith("the model (")
    assert (
        "fit in the last-level cache (268.4 MB): decode reads them from the cache"
        in (engine["fraction_note"])
    )
    ((_, line),) = verdicts_of(document, "engine")
    assert "no fraction: the model" in line and "% of it" not in line


@pytest.mark.parametrize(
    ("bandwidth", "model", "kv", "context", "decode", "cache", "expected"),
    [
        # 100 GiB/s over 1 GiB of weights and 1 MiB x 1024 of KV cache: 50 tokens/s
        (100.0, GIB, MIB, 1024, 25.0, 32 * MIB, (2 * GIB, 50.0, 0.5)),
        (100.0, GIB, None, 1024, 25.0, None, (GIB, 100.0, 0.25)),
        (100.0, 16 * MIB, 0, 0, 2000.0, 32 * MIB, (16 * MIB, 6400.0, None)),
        (None, GIB, 0, 0, 25.0, None, (GIB, None, None)),
    ],
)
def test_physical_limit(
    bandwidth: float | None,
    model: int,
    kv: int | None,
    context: int,
    decode: float,
    cache: int | None,
    expected: tuple[int, float | None, float | None],
) -> None:
    out = ev.physical_limit(bandwidth, model, kv, context, decode, cache, "LLC", "host memory")
    assert (
        out["bytes_per_token"],
        out["physical_limit_tokens_per_s"],
        out["fraction_of_limit"],
    ) == (expected)
    assert (out["fraction_note"] is None) == (expected[2] is not None)


def test_the_model_on_the_gpu_is_judged_by_the_gpus_bandwidth() -> None:
    gpu_bench = json.loads(capture("llama-bench-smollm2.json"))
    for test in gpu_bench:
        test.update({"backends": "CUDA", "n_gpu_layers": 99, "avg_ts": test["avg_ts"] * 10})
    stdout = program({0: {"h2d": 22.0, "d2h": 23.0, "d2d": 1500.0}}, [])
    engine = {
        "build": "llama-0.3.36-cuda80-abc",
        "model": MODEL,
        "depth": 512,
        "rc": 0,
        "stdout": json.dumps(gpu_bench),
        "stderr": capture("llama-bench-smollm2-verbose.txt"),
    }
    document = _gpu_document([gpu_fact(0)], stdout, engine=engine)
    result = document["engine"]
    assert result["physical_limit_tokens_per_s"] == pytest.approx(
        1500.0 * GIB / result["bytes_per_token"], abs=0.01
    )
    # about 100 MB does not fit in the A100's 40 MiB L2
    assert result["fraction_of_limit"] is not None


def test_the_model_on_an_unmeasured_gpu_says_why() -> None:
    gpu_bench = json.loads(capture("llama-bench-smollm2.json"))
    for test in gpu_bench:
        test.update({"backends": "CUDA", "n_gpu_layers": 99})
    engine = {
        "build": "b",
        "model": MODEL,
        "depth": 512,
        "rc": 0,
        "stdout": json.dumps(gpu_bench),
        "stderr": "",
    }
    document = _gpu_document(
        [gpu_fact(0)],
        None,
        engine=engine,
        cuda={"compiled": False, "ran": False, "reason": "no nvcc"},
    )
    assert document["engine"]["physical_limit_tokens_per_s"] is None
    assert document["engine"]["kv_bytes_per_token"] is None
    assert document["engine"]["fraction_note"] == (
        "the model runs on the GPU, whose memory bandwidth was not measured (no nvcc)"
    )


def test_a_failed_benchmark_and_no_engine() -> None:
    failed = {
        "build": "b",
        "model": MODEL,
        "depth": 512,
        "rc": 1,
        "stdout": "",
        "stderr": "main: error: failed to load model 'x.gguf'",
    }
    document = ev.evaluation_document(cpu_inputs(engine=failed))
    validate(document)
    assert document["engine"]["decode_tokens_per_s"] is None
    assert document["engine"]["fraction_note"] == (
        "not measured: llama-bench exited 1: main: error: failed to load model 'x.gguf'"
    )
    assert verdicts_of(document, "engine")[0][0] == "warning"
    none = ev.evaluation_document(cpu_inputs(engine=None))
    validate(none)
    assert none["engine"] is None
    assert verdicts_of(none, "engine")[0][0] == "warning"


def test_memory_below_what_the_inventory_expects_is_a_finding() -> None:
    document = ev.evaluation_document(
        cpu_inputs(settings={**SETTINGS, "memory_expected_gib_per_s": 40.0})
    )
    ((severity, message),) = verdicts_of(document, "host memory")
    assert severity == "finding" and "20% of the 40.0 GiB/s it should reach" in message


def test_unmeasured_memory_is_null_with_the_reason() -> None:
    document = ev.evaluation_document(
        cpu_inputs(memory={"reason": "hardware_eval_memory_enabled is false"})
    )
    validate(document)
    assert document["memory_bandwidth"]["gib_per_s"] is None
    assert document["memory_bandwidth"]["reason"] == "hardware_eval_memory_enabled is false"
    assert verdicts_of(document, "host memory") == [
        ("warning", "not measured: hardware_eval_memory_enabled is false")
    ]
    assert document["engine"]["physical_limit_tokens_per_s"] is None
    assert document["engine"]["fraction_note"] == (
        "the host's memory bandwidth was not measured (hardware_eval_memory_enabled is false)"
    )


def test_a_disabled_engine_benchmark_keeps_the_build() -> None:
    engine = {"build": "b", "model": MODEL, "reason": "hardware_eval_engine_enabled is false"}
    document = ev.evaluation_document(cpu_inputs(engine=engine))
    validate(document)
    assert document["engine"]["build"] == "b"
    assert document["engine"]["model_bytes"] == SMOLLM2_FILE_BYTES
    assert document["engine"]["fraction_note"] == (
        "not measured: hardware_eval_engine_enabled is false"
    )


# -- the key ---------------------------------------------------------------------------------------


def test_the_key_ignores_what_moves_between_runs() -> None:
    base = facts([gpu_fact(0), gpu_fact(1)])
    key = ev.evaluation_key(base, CACHE, "build-a", "sha-a")
    idle = copy.deepcopy(base)
    idle["llmfleet_hardware"]["gpus"][0]["pcie_gen_current"] = 1
    idle["llmfleet_hardware"]["memory_total_mib"] += 3  # a kernel update moves MemTotal
    idle["llmfleet_hardware"]["driver_version"] = "535.161.07"
    assert ev.evaluation_key(idle, CACHE, "build-a", "sha-a") == key
    assert key["engine_build"] == "build-a" and key["model_sha256"] == "sha-a"
    assert len(key["hardware"]) == 64


@pytest.mark.parametrize(
    "change",
    [
        lambda f, c: f["llmfleet_hardware"]["gpus"][1].update(uuid="GPU-swapped"),
        lambda f, c: f["llmfleet_hardware"]["gpus"][0].update(pcie_width_max=8),
        lambda f, c: f["llmfleet_hardware"]["gpus"].pop(),
        lambda f, c: f.update(processor_count=2),
        lambda f, c: f["llmfleet_hardware"].update(memory_total_mib=48210),
        lambda f, c: c.update(llc_bytes=64 * MIB),
    ],
    ids=["gpu swapped", "link", "gpu removed", "sockets", "memory", "llc"],
)
def test_the_key_moves_with_the_hardware(change: Any) -> None:
    base = facts([gpu_fact(0), gpu_fact(1)])
    key = ev.evaluation_key(base, CACHE, "b", "s")
    changed, cache = copy.deepcopy(base), dict(CACHE)
    change(changed, cache)
    assert ev.evaluation_key(changed, cache, "b", "s")["hardware"] != key["hardware"]


def test_the_key_without_an_engine() -> None:
    assert ev.evaluation_key(facts(), CACHE, None, "") == {
        "hardware": ev.evaluation_key(facts(), CACHE, "x", "y")["hardware"],
        "engine_build": None,
        "model_sha256": None,
    }


# -- failing and printing --------------------------------------------------------------------------


def test_failing_only_on_what_the_inventory_asks() -> None:
    stdout = program({0: {"h2d": 8.1, "d2h": 23.0, "d2d": 1500.0}}, [])
    document = _gpu_document([gpu_fact(0)], stdout)
    assert ev.failing_verdicts(document, []) == []
    (line,) = ev.failing_verdicts(document, ["finding"])
    assert line.startswith("finding: gpu 0 pcie: x16 gen 4 link moves 8.1 GiB/s host-to-device")
    assert len(ev.failing_verdicts(document, ["finding", "warning"])) >= 1
    with pytest.raises(ev.EvaluationError, match="allowed: finding, warning"):
        ev.failing_verdicts(document, ["ok"])
    with pytest.raises(ev.EvaluationError, match="hardware_eval_fail_on: fatal"):
        ev.failing_verdicts(document, ["fatal"])


def test_lines_put_findings_first() -> None:
    stdout = program({0: {"h2d": 8.1, "d2h": 23.0, "d2d": 1500.0}}, [])
    lines = ev.verdict_lines(_gpu_document([gpu_fact(0)], stdout))
    assert lines[0].startswith("FINDING gpu 0 pcie: ")
    assert lines[-1].startswith("OK ")
