"""The report's data model (llmfleet.report_data) against inputs made as the real ones are.

Facts come from the nvidia-smi captures in tests/captures through the gpu_facts parser,
evaluations follow schema llmfleet.hwevaluation/1, bench documents are summarised by
llmfleet.bench itself, and Prometheus' answers are in its HTTP API's vector form (see
tests/browser/report_inputs.py).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from browser.report_inputs import (
    HOSTS,
    bench_document,
    evaluation,
    hardware_from_capture,
    host_facts,
    prometheus_snapshot,
    sample,
    sample_inputs,
)

from llmfleet.bench import SCHEMA_FILE as BENCH_SCHEMA_FILE
from llmfleet.report import COLUMNS, EXTRA_COLUMNS, SCHEMAS, report_rows, text_rows
from llmfleet.report_data import REPORT_SCHEMA, build_report, instance_host, prometheus_view
from llmfleet.validation import check, compile_schema


def report_of(inputs: dict[str, Any], prometheus: Any = "sample") -> dict[str, Any]:
    return build_report(
        inputs["facts"],
        inputs["evaluations"],
        inputs["benches"],
        inputs["prometheus"] if prometheus == "sample" else prometheus,
        generated_at="2026-11-30T07:00:00+00:00",
    )


@pytest.fixture(scope="module")
def inputs() -> dict[str, Any]:
    return sample_inputs()


@pytest.fixture(scope="module")
def report(inputs: dict[str, Any]) -> dict[str, Any]:
    return report_of(inputs)


def host(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(entry for entry in report["hosts"] if entry["host"] == name)


def test_the_inputs_follow_their_schemas(inputs: dict[str, Any]) -> None:
    bench = compile_schema(json.loads(BENCH_SCHEMA_FILE.read_text()))
    for document in inputs["benches"].values():
        assert check(bench, json.loads(json.dumps(document))) == []
    schema_file = SCHEMAS / "hwevaluation-1.json"
    if not schema_file.is_file():
        pytest.skip(f"{schema_file} is not published yet")
    evaluation_schema = compile_schema(json.loads(schema_file.read_text()))
    documents = [
        *inputs["evaluations"].values(),
        inputs["facts"]["fl-gpu-a100"]["ansible_local"]["hardware_eval"],
    ]
    for document in documents:
        assert check(evaluation_schema, json.loads(json.dumps(document))) == []


def test_the_document_is_json_and_names_every_host(report: dict[str, Any]) -> None:
    assert json.loads(json.dumps(report)) == report
    assert report["schema"] == REPORT_SCHEMA
    assert [entry["host"] for entry in report["hosts"]] == sorted(HOSTS)
    assert report["problems"] == []
    assert report["prometheus"] == {
        "url": "http://fl-mon:9090",
        "reachable": True,
        "error": None,
        "errors": {},
    }


def test_tier_and_why(report: dict[str, Any]) -> None:
    assert host(report, "fl-gpu-a5000")["tier"] == {
        "name": "enterprise",
        "source": "detected",
        "detected": "enterprise",
        "reason": "48.0 GiB usable VRAM on 2 GPUs reaches the enterprise class at 90 %",
    }
    a100 = host(report, "fl-gpu-a100")["tier"]
    assert a100["name"] == "pro" and "MIG mode counts with its largest instance" in a100["reason"]
    t4 = host(report, "fl-gpu-t4")["tier"]
    assert (t4["name"], t4["source"], t4["detected"]) == ("standard", "pinned", "pro")
    assert t4["reason"] == "pinned by llmfleet_tier_override; the hardware alone reaches pro"
    assert host(report, "fl-cpu")["tier"]["reason"] == "no GPU found: served from the CPU"
    fresh = host(report, "fresh-01")["tier"]
    assert (fresh["name"], fresh["source"]) == (None, "undecided")
    assert "no driver answers" in fresh["reason"]


def test_an_undecided_tier_quotes_the_hardware_problems() -> None:
    hardware, _ = hardware_from_capture("t4", memory_total_mib=1024, cpu_cores=2)
    hardware["problems"] = [f"problem {n}" for n in range(5)]
    report = build_report({"h": host_facts(hardware, None)}, {}, {}, None)
    assert report["hosts"][0]["tier"]["reason"] == (
        "undecided: problem 0; problem 1; problem 2 (and 2 more)"
    )


def test_gpus_join_facts_evaluation_and_prometheus(report: dict[str, Any]) -> None:
    gpus = host(report, "fl-gpu-a5000")["gpus"]
    assert [gpu["name"] for gpu in gpus] == ["NVIDIA RTX A5000"] * 2
    # VRAM now, from DCGM_FI_DEV_FB_USED / FB_FREE
    assert gpus[0]["vram"] == {
        "total_mib": 24564,
        "used_mib": 20480.0,
        "free_mib": 4084.0,
        "source": "prometheus",
    }
    # PCIe as the evaluation measured it under load (the facts saw an idle gen 1 link)
    assert gpus[1]["pcie"]["source"] == "evaluation"
    assert (gpus[1]["pcie"]["width_current"], gpus[1]["pcie"]["width_max"]) == (8, 16)
    assert [gpu["pcie"]["at_max"] for gpu in gpus] == [True, False]
    assert gpus[1]["pcie"]["h2d_gib_per_s"] == pytest.approx(11.1)
    assert gpus[0]["memory_bandwidth_gib_per_s"] == 640.0


def test_without_prometheus_vram_comes_from_the_evaluation_and_pcie_from_the_facts(
    inputs: dict[str, Any],
) -> None:
    report = report_of(inputs, prometheus=None)
    a5000 = host(report, "fl-gpu-a5000")
    # the last sample (t = 2 s) of each GPU
    assert [gpu["vram"]["used_mib"] for gpu in a5000["gpus"]] == [5400, 5400]
    assert {gpu["vram"]["source"] for gpu in a5000["gpus"]} == {"evaluation"}
    assert a5000["summary"]["vram_free_mib"] == 2 * (24564 - 5400)
    a100 = host(report, "fl-gpu-a100")  # its evaluation is in the fact cache, without samples
    assert a100["gpus"][0]["vram"]["source"] is None
    fresh = host(report, "fresh-01")["gpus"][0]
    assert fresh["pcie"]["source"] == "facts"
    assert (fresh["pcie"]["gen_current"], fresh["pcie"]["gen_max"]) == (1, 4)
    assert fresh["pcie"]["at_max"] is False
    assert fresh["name"] == "0x2204"


def test_evaluation_engine_and_memory_bandwidth(report: dict[str, Any]) -> None:
    a5000 = host(report, "fl-gpu-a5000")
    assert a5000["evaluation"]["source"] == "file"
    assert a5000["evaluation"]["memory_bandwidth"]["gib_per_s"] == 61.2
    engine = a5000["evaluation"]["engine"]
    assert (engine["decode_tokens_per_s"], engine["physical_limit_tokens_per_s"]) == (96.0, 145.8)
    assert engine["fraction_of_limit"] == pytest.approx(96.0 / 145.8, abs=1e-4)
    assert [verdict["severity"] for verdict in a5000["evaluation"]["verdicts"]] == [
        "finding",
        "ok",
    ]
    assert host(report, "fl-gpu-a100")["evaluation"]["source"] == "fact"


def test_the_later_evaluation_wins(inputs: dict[str, Any]) -> None:
    changed = copy.deepcopy(inputs)
    newer = evaluation("fl-gpu-a100", measured_at="2026-12-01T00:00:00Z", memory_gib_per_s=99.0)
    older = evaluation("fl-gpu-a100", measured_at="2026-01-01T00:00:00Z", memory_gib_per_s=1.0)
    changed["evaluations"]["fl-gpu-a100"] = newer
    a100 = host(report_of(changed), "fl-gpu-a100")
    assert (a100["evaluation"]["source"], a100["summary"]["memory_bandwidth_gib_per_s"]) == (
        "file",
        99.0,
    )
    changed["evaluations"]["fl-gpu-a100"] = older
    assert host(report_of(changed), "fl-gpu-a100")["evaluation"]["source"] == "fact"


def test_serving_colors_from_the_blue_green_fact(report: dict[str, Any]) -> None:
    serving = host(report, "fl-gpu-a5000")["serving"]
    assert (serving["active"], serving["previous"]) == ("green", "blue")
    assert [(c["color"], c["active"], c["previous"]) for c in serving["colors"]] == [
        ("blue", False, True),
        ("green", True, False),
    ]
    assert serving["colors"][1]["build"] == "llama.cpp-b4800-cuda12.2-sm86"
    assert serving["colors"][1]["model"] == "qwen2.5-7b-instruct-q4_k_m.gguf"
    assert host(report, "fresh-01")["serving"] is None


def test_bench_levels_and_the_decode_rate(inputs: dict[str, Any], report: dict[str, Any]) -> None:
    bench = host(report, "fl-gpu-a5000")["bench"]
    assert [level["concurrency"] for level in bench["levels"]] == [1, 2, 4, 8]
    source = inputs["benches"]["fl-gpu-a5000"]["levels"][0]
    level = bench["levels"][0]
    assert level["ttft_s"]["p99"] == source["ttft_s"]["p99"] is not None
    assert level["tpot_s"]["p50"] == source["tpot_s"]["p50"]
    assert level["output_tokens_per_s"] == source["throughput"]["output_tokens_per_s"]
    assert level["decode_tokens_per_s_per_stream"] == pytest.approx(
        1 / source["tpot_s"]["mean"], abs=0.01
    )
    # per stream, decode slows as concurrency grows; all streams together go faster
    per_stream = [level["decode_tokens_per_s_per_stream"] for level in bench["levels"]]
    together = [level["output_tokens_per_s"] for level in bench["levels"]]
    assert per_stream == sorted(per_stream, reverse=True)
    assert together == sorted(together)


def test_summary_columns(report: dict[str, Any]) -> None:
    a5000 = host(report, "fl-gpu-a5000")["summary"]
    assert a5000["decode_c1_source"] == "bench"
    assert (
        a5000["decode_tokens_per_s_c1"]
        == (host(report, "fl-gpu-a5000")["bench"]["levels"][0]["decode_tokens_per_s_per_stream"])
    )
    assert (a5000["fraction_source"], a5000["active_model"]) == (
        "evaluation",
        "qwen2.5-7b-instruct-q4_k_m.gguf",
    )
    assert (a5000["vram_used_mib"], a5000["vram_free_mib"]) == (26624, 22504)
    t4 = host(report, "fl-gpu-t4")["summary"]  # no bench: the evaluation's decode
    assert (t4["decode_tokens_per_s_c1"], t4["decode_c1_source"]) == (38.5, "evaluation")
    cpu = host(report, "fl-cpu")["summary"]  # the model fits the cache: no fraction at all
    assert (cpu["fraction_of_limit"], cpu["fraction_source"]) == (None, None)
    fresh = host(report, "fresh-01")["summary"]
    assert set(fresh.values()) <= {None, 1}  # one GPU, nothing else known


def test_the_fraction_falls_back_to_the_bench(inputs: dict[str, Any]) -> None:
    changed = copy.deepcopy(inputs)
    changed["evaluations"]["fl-gpu-a5000"]["engine"]["fraction_of_limit"] = None
    summary = host(report_of(changed), "fl-gpu-a5000")["summary"]
    assert summary["fraction_source"] == "bench"
    assert summary["fraction_of_limit"] == pytest.approx(
        summary["decode_tokens_per_s_c1"] / 145.8, abs=1e-4
    )


def test_alerts_per_host_and_without_one(report: dict[str, Any]) -> None:
    assert [alert["alertname"] for alert in host(report, "fl-gpu-t4")["alerts"]] == [
        "LlmfleetGpuHot"
    ]
    fresh = host(report, "fresh-01")["alerts"]  # instance "fresh-01:9180"
    assert [(alert["alertname"], alert["action"]) for alert in fresh] == [
        ("LlmfleetEngineDown", "rollback")
    ]
    assert host(report, "fl-cpu")["alerts"] == []
    assert [alert["alertname"] for alert in report["fleet"]["alerts_without_host"]] == [
        "LlmfleetNoTraffic"
    ]
    assert report["fleet"]["alerts_firing"] == 3


def test_hosts_by_tier_and_capacity_left(report: dict[str, Any]) -> None:
    tiers = {tier["tier"]: tier for tier in report["fleet"]["tiers"]}
    assert list(tiers) == ["cpu", "standard", "pro", "enterprise", "undecided"]
    assert tiers["enterprise"] == {
        "tier": "enterprise",
        "hosts": ["fl-gpu-a5000"],
        "count": 1,
        "answering": 1,
        "vram_free_mib": 4084 + 18420,
        "vram_free_unknown": [],
    }
    assert (tiers["cpu"]["answering"], tiers["cpu"]["vram_free_mib"]) == (1, 0)
    # fresh-01's engine does not answer: nothing of it counts
    assert (tiers["undecided"]["answering"], tiers["undecided"]["vram_free_mib"]) == (0, 0)


def test_an_answering_host_without_vram_figures_is_named(inputs: dict[str, Any]) -> None:
    changed = copy.deepcopy(inputs)
    series = changed["prometheus"]["series"]
    series["fb_free"] = [s for s in series["fb_free"] if s["metric"]["instance"] != "fl-gpu-t4"]
    tiers = {tier["tier"]: tier for tier in report_of(changed)["fleet"]["tiers"]}
    assert (tiers["standard"]["vram_free_mib"], tiers["standard"]["vram_free_unknown"]) == (
        0,
        ["fl-gpu-t4"],
    )


def test_without_prometheus_nothing_live_is_claimed(inputs: dict[str, Any]) -> None:
    for prometheus in (None, {"url": "http://mon:9090", "error": "refused", "series": {}}):
        report = report_of(inputs, prometheus=prometheus)
        assert all(tier["answering"] is None for tier in report["fleet"]["tiers"])
        assert all(tier["vram_free_mib"] is None for tier in report["fleet"]["tiers"])
        assert all(entry["alerts"] is None for entry in report["hosts"])
        assert all(entry["answers"] is None for entry in report["hosts"])
        assert report["fleet"]["alerts_firing"] is None
    assert report["prometheus"]["reachable"] is False
    assert report["prometheus"]["error"] == "refused"


def test_a_failed_query_leaves_its_figures_unknown(inputs: dict[str, Any]) -> None:
    changed = copy.deepcopy(inputs)
    del changed["prometheus"]["series"]["alerts"], changed["prometheus"]["series"]["up"]
    changed["prometheus"]["errors"] = {"alerts": "HTTP 503", "up": "HTTP 503"}
    report = report_of(changed)
    assert all(entry["alerts"] is None and entry["answers"] is None for entry in report["hosts"])
    assert report["fleet"]["alerts_firing"] is None
    assert host(report, "fl-gpu-t4")["summary"]["vram_free_mib"] == 10240  # still known


def test_hosts_with_results_but_no_facts_are_named() -> None:
    document = bench_document("http://ghost:8080", {1: (0.01, 0.1)})
    report = build_report({}, {}, {"ghost": document}, None)
    assert [entry["host"] for entry in report["hosts"]] == ["ghost"]
    assert report["hosts"][0]["tier"]["source"] == "undecided"
    assert report["problems"] == [
        "ghost: has results but no facts in the fact cache (run the preflight)"
    ]


def test_bad_values_are_unknown_never_a_crash(inputs: dict[str, Any]) -> None:
    changed = copy.deepcopy(inputs)
    broken = changed["evaluations"]["fl-gpu-a5000"]
    broken["memory_bandwidth"]["gib_per_s"] = "fast"
    broken["engine"]["decode_tokens_per_s"] = float("nan")
    broken["gpus"] = "none"
    broken["verdicts"] = [None, {"severity": 3}]
    changed["benches"]["fl-gpu-a5000"]["levels"][0]["tpot_s"] = None
    changed["facts"]["fl-gpu-t4"]["ansible_local"]["blue_green"]["colors"] = ["blue"]
    changed["prometheus"]["series"]["fb_used"].append(sample(1, instance="fl-cpu", gpu="x"))
    report = report_of(changed)
    a5000 = host(report, "fl-gpu-a5000")
    assert a5000["summary"]["memory_bandwidth_gib_per_s"] is None
    assert a5000["evaluation"]["engine"]["decode_tokens_per_s"] is None
    assert a5000["bench"]["levels"][0]["decode_tokens_per_s_per_stream"] is None
    assert [verdict["severity"] for verdict in a5000["evaluation"]["verdicts"]] == [
        "warning",
        "warning",
    ]
    assert host(report, "fl-gpu-t4")["serving"]["colors"] == []
    json.dumps(report)


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ("fl-cpu", "fl-cpu"),
        ("fl-cpu:9100", "fl-cpu"),
        ("10.0.0.5:9100", "10.0.0.5"),
        ("[fd00::5]:9100", "fd00::5"),
        ("fd00::5", "fd00::5"),
        ("", None),
    ],
)
def test_instance_labels_name_hosts(instance: str, expected: str | None) -> None:
    assert instance_host({"instance": instance}) == expected


def test_prometheus_view_keeps_the_answering_engines() -> None:
    view = prometheus_view(prometheus_snapshot())
    assert view["up"] == {
        "fl-cpu": True,
        "fl-gpu-a100": True,
        "fl-gpu-a5000": True,
        "fl-gpu-t4": True,
        "fresh-01": False,
    }
    assert view["vram"]["fl-gpu-a5000"][1] == {"used_mib": 6144.0, "free_mib": 18420.0}


def test_text_rows_keep_the_old_columns_and_add_the_new(inputs: dict[str, Any]) -> None:
    report = report_of(inputs)
    rows = text_rows(report)
    old = report_rows(inputs["facts"])
    assert [row[: len(COLUMNS)] for row in rows] == old
    extra = {row[0]: row[len(COLUMNS) :] for row in rows}
    assert len(EXTRA_COLUMNS) == 4
    decode = host(report, "fl-gpu-a5000")["summary"]["decode_tokens_per_s_c1"]
    assert extra["fl-gpu-a5000"] == (
        "61.2 GiB/s",
        f"{decode:.1f} tok/s",
        "66 %",
        "qwen2.5-7b-instruct-q4_k_m.gguf",
    )
    assert extra["fl-cpu"][2] == "-"  # the model fits the cache: no fraction
    assert extra["fresh-01"] == ("-", "-", "-", "-")
