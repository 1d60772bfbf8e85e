"""The report's inputs for tests, each made the way the real one is made.

* facts: the real nvidia-smi captures in tests/captures through the gpu_facts parser
  (`llmfleet_gpu.parse_nvidia_smi_xml`, `build_hardware_facts`, `decide_tier`), a GPU seen
  on the PCI bus only through `scan_pci` on a fake sysfs tree, and the blue_green local
  fact as the blue_green role writes it;
* evaluations: documents as /work/notes' schema llmfleet.hwevaluation/1 lays them out;
* bench runs: levels summarised by `llmfleet.bench.summarize_level` itself, from request
  results with known timings, in a document shaped as `run_benchmark` returns it;
* Prometheus: answers in the HTTP API's vector form, as `report_prometheus.fetch` keeps them.

Used by tests/unit/test_report_data.py and, when no report is given, by the browser test.
"""

from __future__ import annotations

import hashlib
import random
import tempfile
from pathlib import Path
from typing import Any

import llmfleet_gpu as g

from llmfleet.bench import SCHEMA as BENCH_SCHEMA
from llmfleet.bench import BenchConfig, Level, LevelRun, RequestResult, summarize_level

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
MODEL = "qwen2.5-7b-instruct-q4_k_m.gguf"
SMALL_MODEL = "SmolLM2-135M-Instruct-Q8_0.gguf"
OLD_BUILD = "llama.cpp-b4500-cuda12.2-sm86"
NEW_BUILD = "llama.cpp-b4800-cuda12.2-sm86"
HOSTS = ("fl-cpu", "fl-gpu-a100", "fl-gpu-a5000", "fl-gpu-t4", "fresh-01")


# -- facts -------------------------------------------------------------------------------------


def hardware_from_capture(
    name: str, *, memory_total_mib: int, cpu_cores: int
) -> tuple[dict[str, Any], str | None]:
    """The llmfleet_hardware fact and the detected tier for a capture in tests/captures."""
    smi = g.parse_nvidia_smi_xml((CAPTURES / f"{name}.xml").read_bytes())
    hardware = g.build_hardware_facts(
        smi=smi,
        pci=None,
        nvidia_module=(True, smi["driver_version"]),
        memory_total_mib=memory_total_mib,
        cpu_cores=cpu_cores,
        numa_nodes=1,
    )
    tier = g.decide_tier(
        hardware["source"], hardware["usable_vram_mib"], g.DEFAULT_TIERS, hardware["problems"]
    )
    return hardware, tier


def hardware_without_driver() -> tuple[dict[str, Any], str | None]:
    """A host whose GPU is on the PCI bus but no driver answers (a fresh install)."""
    with tempfile.TemporaryDirectory() as root:
        device = Path(root, "bus/pci/devices/0000:01:00.0")
        device.mkdir(parents=True)
        attributes = {
            "vendor": "0x10de",
            "class": "0x030000",
            "device": "0x2204",
            "max_link_speed": "16.0 GT/s PCIe",
            "current_link_speed": "2.5 GT/s PCIe",
            "max_link_width": "16",
            "current_link_width": "16",
        }
        for attribute, value in attributes.items():
            (device / attribute).write_text(value + "\n")
        pci = g.scan_pci(root)
    hardware = g.build_hardware_facts(
        smi=None,
        pci=pci,
        nvidia_module=(False, None),
        memory_total_mib=65536,
        cpu_cores=16,
        numa_nodes=1,
    )
    tier = g.decide_tier(hardware["source"], hardware["usable_vram_mib"], g.DEFAULT_TIERS)
    return hardware, tier


def hardware_without_gpu() -> tuple[dict[str, Any], str | None]:
    hardware = g.build_hardware_facts(
        smi=None,
        pci={"gpus": [], "nvswitch_count": 0},
        nvidia_module=(False, None),
        memory_total_mib=8192,
        cpu_cores=4,
        numa_nodes=1,
    )
    return hardware, g.decide_tier(hardware["source"], hardware["usable_vram_mib"], [])


def blue_green(
    active: str, previous: str, builds: dict[str, str], model: str = MODEL
) -> dict[str, Any]:
    """The blue_green local fact (plugins/filter/llmfleet_fleet.py's shape)."""
    return {
        "active": active,
        "previous": previous,
        "colors": {
            color: {
                "build": build,
                "model": {
                    "name": model,
                    "path": f"/data/models/{model.split('.')[0]}/{model}",
                    "sha256": hashlib.sha256(model.encode()).hexdigest(),
                    "size": 4683073952,
                },
                "args": "--ctx-size 8192 --n-gpu-layers 999",
                "port": port,
            }
            for (color, build), port in zip(builds.items(), (8081, 8082), strict=True)
        },
    }


def host_facts(
    hardware: dict[str, Any],
    tier: str | None,
    *,
    pinned: str | None = None,
    local: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the preflight leaves in the fact cache for one host."""
    return {
        "llmfleet_hardware": hardware,
        "llmfleet_tier": tier,
        "preflight_tier": pinned or tier,
        "preflight_tier_source": "pinned" if pinned else ("detected" if tier else "undecided"),
        "ansible_local": local or {},
    }


# -- evaluations -------------------------------------------------------------------------------


def evaluation(
    host: str,
    *,
    measured_at: str = "2026-11-30T05:00:00Z",
    gpus: list[dict[str, Any]] | None = None,
    memory_gib_per_s: float | None = 12.3,
    engine: dict[str, Any] | None = None,
    verdicts: list[dict[str, Any]] | None = None,
    samples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A llmfleet.hwevaluation/1 document."""
    return {
        "schema": "llmfleet.hwevaluation/1",
        "host": host,
        "measured_at": measured_at,
        "key": {"hardware": "ab" * 32, "engine_build": NEW_BUILD, "model_sha256": "cd" * 32},
        "cpu": {
            "model": "AMD EPYC 7443P 24-Core Processor",
            "sockets": 1,
            "cores": 24,
            "threads": 48,
            "numa_nodes": 1,
            "llc_bytes": 134217728,
        },
        "memory_bandwidth": {
            "tool": "likwid-bench",
            "test": "copy_avx",
            "threads": 24,
            "working_set_bytes": 1073741824,
            "gib_per_s": memory_gib_per_s,
            "reason": None if memory_gib_per_s is not None else "likwid-bench is not installed",
        },
        "gpus": gpus or [],
        "p2p": [],
        "cuda_program": {
            "compiled": True,
            "nvcc_release": "12.2",
            "ran": bool(gpus),
            "reason": None if gpus else "no GPU answers",
        },
        "gpu_samples": samples or [],
        "engine": engine,
        "verdicts": verdicts or [],
    }


def gpu_result(
    index: int, uuid: str, name: str, gen: tuple[int, int], width: tuple[int, int], **extra: Any
) -> dict[str, Any]:
    expected = {3: 12.3, 4: 24.6}[gen[0]] * width[0] / 16
    return {
        "index": index,
        "name": name,
        "uuid": uuid,
        "pcie": {
            "gen_current": gen[0],
            "gen_max": gen[1],
            "width_current": width[0],
            "width_max": width[1],
            "expected_gib_per_s": round(expected, 1),
            "h2d_gib_per_s": round(expected * 0.9, 1),
            "d2h_gib_per_s": round(expected * 0.93, 1),
        },
        "memory_bandwidth_gib_per_s": extra.pop("memory_bandwidth_gib_per_s", 640.0),
        "reason": None,
        **extra,
    }


def engine_result(decode: float, limit: float | None, **extra: Any) -> dict[str, Any]:
    return {
        "build": NEW_BUILD,
        "model": "Qwen2.5-7B-Instruct Q4_K_M",
        "model_bytes": 4683073952,
        "kv_bytes_per_token": 57344,
        "context_tokens": 512,
        "decode_tokens_per_s": decode,
        "prefill_tokens_per_s": decode * 24,
        "bytes_per_token": 4712434016,
        "physical_limit_tokens_per_s": limit,
        "fraction_of_limit": None if limit is None else round(decode / limit, 4),
        "fraction_note": None,
        **extra,
    }


# -- bench -------------------------------------------------------------------------------------


def bench_level(
    config: BenchConfig, concurrency: int, tpot_s: float, ttft_s: float, seed: int
) -> dict[str, Any]:
    model = config.model or MODEL
    """A level summarised by llmfleet.bench itself, from requests of known timings."""
    rng = random.Random(seed)
    tokens = config.output_tokens
    results = []
    for number in range(config.requests):
        ttft = ttft_s * rng.uniform(0.8, 1.6)
        gaps = [tpot_s * rng.uniform(0.9, 1.12) for _ in range(tokens - 1)]
        results.append(
            RequestResult(
                ok=True,
                status=200,
                latency_s=ttft + sum(gaps),
                ttft_s=ttft,
                completion_tokens=tokens,
                token_source="usage",
                model=model,
                itl_s=gaps,
                input_tokens=config.input_tokens,
                prompt_tokens=config.input_tokens + 9,
                cached_tokens=0,
                prompt_processed=config.input_tokens + 9,
                content_chunks=tokens,
                started_s=number * 0.01,
            )
        )
    wall = sum(result.latency_s or 0 for result in results) / concurrency
    run = LevelRun(Level(concurrency=concurrency), results, wall, "count")
    return summarize_level(run, config)


def bench_document(
    endpoint: str, levels: dict[int, tuple[float, float]], seed: int = 0, model: str = MODEL
) -> dict[str, Any]:
    """A llmfleet.bench/2 document: per concurrency, (mean TPOT, mean TTFT) in seconds."""
    config = BenchConfig(
        endpoint,
        levels=tuple(Level(concurrency=c) for c in levels),
        requests=100,
        output_tokens=64,
        read_metrics=False,
        model=model,
    )
    return {
        "schema": BENCH_SCHEMA,
        "tool": "llmfleet 0.1.0",
        "endpoint": endpoint,
        "url": config.url,
        "model": model,
        "started_at": "2026-11-30T06:00:00+00:00",
        "settings": config.settings(),
        "warmup": None,
        "levels": [
            bench_level(config, c, tpot, ttft, seed + c) for c, (tpot, ttft) in levels.items()
        ],
    }


# -- Prometheus --------------------------------------------------------------------------------


def sample(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1796014800.0, f"{value:g}"]}


def firing_alert(alertname: str, **labels: str) -> dict[str, Any]:
    """A sample of Prometheus' ALERTS series: the alert `alertname`, firing, with `labels`."""
    return sample(1, __name__="ALERTS", alertname=alertname, alertstate="firing", **labels)


def prometheus_snapshot() -> dict[str, Any]:
    """What report_prometheus.fetch keeps of a Prometheus that answered every query."""
    vram = {
        ("fl-gpu-a5000", "0"): (20480, 4084),
        ("fl-gpu-a5000", "1"): (6144, 18420),
        ("fl-gpu-t4", "0"): (5120, 10240),
        ("fl-gpu-a100", "0"): (9000, 31960),
    }
    return {
        "url": "http://fl-mon:9090",
        "error": None,
        "errors": {},
        "series": {
            "alerts": [
                firing_alert(
                    "LlmfleetGpuHot", instance="fl-gpu-t4", job="node", gpu="0", severity="warning"
                ),
                firing_alert(
                    "LlmfleetEngineDown",
                    instance="fresh-01:9180",
                    severity="critical",
                    action="rollback",
                ),
                firing_alert("LlmfleetNoTraffic", severity="info"),
            ],
            "fb_used": [
                sample(used, instance=host, gpu=gpu, job="node")
                for (host, gpu), (used, _) in vram.items()
            ],
            "fb_free": [
                sample(free, instance=host, gpu=gpu, job="node")
                for (host, gpu), (_, free) in vram.items()
            ],
            "up": [
                sample(1 if host != "fresh-01" else 0, instance=host, job="llmfleet-engine")
                for host in HOSTS
            ],
        },
    }


# -- all of it ---------------------------------------------------------------------------------


def sample_inputs() -> dict[str, Any]:
    """facts, evaluations, benches and prometheus for five hosts of every kind."""
    a5000, a5000_tier = hardware_from_capture(
        "dual-a5000-narrow", memory_total_mib=262144, cpu_cores=48
    )
    t4, t4_tier = hardware_from_capture("t4", memory_total_mib=65536, cpu_cores=16)
    a100, a100_tier = hardware_from_capture("a100-mig", memory_total_mib=524288, cpu_cores=64)
    cpu, cpu_tier = hardware_without_gpu()
    fresh, fresh_tier = hardware_without_driver()
    a5000_uuids = [gpu["uuid"] for gpu in a5000["gpus"]]
    a100_eval = evaluation(
        "fl-gpu-a100",
        measured_at="2026-11-30T04:00:00Z",
        gpus=[
            gpu_result(
                0,
                a100["gpus"][0]["uuid"],
                "NVIDIA A100-SXM4-40GB",
                (4, 4),
                (16, 16),
                memory_bandwidth_gib_per_s=1350.0,
            )
        ],
        memory_gib_per_s=95.5,
        engine=engine_result(161.0, 286.5),
    )
    facts = {
        "fl-gpu-a5000": host_facts(
            a5000,
            a5000_tier,
            local={
                "blue_green": blue_green("green", "blue", {"blue": OLD_BUILD, "green": NEW_BUILD})
            },
        ),
        "fl-gpu-t4": host_facts(
            t4,
            t4_tier,
            pinned="standard",
            local={"blue_green": blue_green("blue", "", {"blue": NEW_BUILD, "green": OLD_BUILD})},
        ),
        "fl-gpu-a100": host_facts(
            a100,
            a100_tier,
            local={
                "blue_green": blue_green("blue", "", {"blue": NEW_BUILD, "green": OLD_BUILD}),
                "hardware_eval": a100_eval,
            },
        ),
        "fl-cpu": host_facts(
            cpu,
            cpu_tier,
            local={
                "blue_green": blue_green(
                    "blue", "", {"blue": NEW_BUILD, "green": OLD_BUILD}, SMALL_MODEL
                )
            },
        ),
        "fresh-01": host_facts(fresh, fresh_tier),
    }
    evaluations = {
        "fl-gpu-a5000": evaluation(
            "fl-gpu-a5000",
            gpus=[
                gpu_result(0, a5000_uuids[0], "NVIDIA RTX A5000", (4, 4), (16, 16)),
                gpu_result(1, a5000_uuids[1], "NVIDIA RTX A5000", (4, 4), (8, 16)),
            ],
            memory_gib_per_s=61.2,
            engine=engine_result(96.0, 145.8),
            samples=[
                {
                    "t": t,
                    "gpu": gpu,
                    "utilization_percent": 97.0,
                    "memory_used_mib": 5200 + 100 * int(t),
                    "memory_total_mib": 24564,
                    "temperature_c": 61.0,
                    "power_w": 190.0,
                    "sm_clock_mhz": 1695,
                }
                for t in (0.0, 1.0, 2.0)
                for gpu in (0, 1)
            ],
            verdicts=[
                {
                    "severity": "finding",
                    "subject": "gpu 1 pcie",
                    "message": "x8 of x16 at gen 4: the link runs at half its width "
                    "(11.1 GiB/s host-to-device)",
                },
                {"severity": "ok", "subject": "gpu 0 pcie", "message": "x16 gen 4, 22.1 GiB/s"},
            ],
        ),
        "fl-gpu-t4": evaluation(
            "fl-gpu-t4",
            gpus=[gpu_result(0, t4["gpus"][0]["uuid"], "Tesla T4", (3, 3), (16, 16))],
            memory_gib_per_s=33.0,
            engine=engine_result(38.5, 62.0),
        ),
        "fl-cpu": evaluation(
            "fl-cpu",
            memory_gib_per_s=12.3,
            engine={
                **engine_result(83.0, 130.0),
                "model": "SmolLM2-135M-Instruct",
                "model_bytes": 98362432,
                "bytes_per_token": 98500000,
                "fraction_of_limit": None,
                "fraction_note": "the model and its KV cache (94 MiB) fit in the 128 MiB "
                "last-level cache: memory bandwidth does not bound decode",
            },
            verdicts=[
                {
                    "severity": "warning",
                    "subject": "engine",
                    "message": "decode is not compared with the limit (the model fits the cache)",
                }
            ],
        ),
    }
    benches = {
        "fl-gpu-a5000": bench_document(
            "http://fl-gpu-a5000:8080",
            {1: (0.0105, 0.09), 2: (0.0118, 0.12), 4: (0.0142, 0.17), 8: (0.0205, 0.29)},
        ),
        "fl-gpu-a100": bench_document(
            "http://fl-gpu-a100:8080", {1: (0.0064, 0.05), 4: (0.0081, 0.08)}
        ),
        "fl-cpu": bench_document(
            "http://fl-cpu:8080", {1: (0.0125, 0.25), 2: (0.0175, 0.4)}, model=SMALL_MODEL
        ),
    }
    return {
        "facts": facts,
        "evaluations": evaluations,
        "benches": benches,
        "prometheus": prometheus_snapshot(),
    }
