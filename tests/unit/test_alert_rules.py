"""Alert rules as data: parsing, validation messages, overrides and the compiled shape.

The shape: every value is recorded once (`llmfleet:<metric>:value`), every alert compares
one recorded series with its threshold, and a per-host variant is a label matcher on it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from helpers import load_module_file, monitoring_role_vars

REPO = Path(__file__).resolve().parents[2]
alerts = load_module_file(
    "llmfleet_alerts_filters", REPO / "plugins" / "filter" / "llmfleet_alerts.py"
)

MONITORING = monitoring_role_vars()
CATALOG: dict[str, Any] = MONITORING["monitoring_alert_catalog"]
RECORDING: list[dict[str, Any]] = MONITORING["monitoring_recording_rules"]
DEFAULTS: dict[str, Any] = DataLoader().load_from_file(
    str(REPO / "group_vars" / "all" / "alerts.yml")
)
DEFAULT_RULES: list[dict[str, Any]] = DEFAULTS["llmfleet_alert_rules"]
#: An alert's expr: one recorded series, at most one instance matcher, a comparison, a number.
ALERT_EXPR = re.compile(
    r'^(?P<series>llmfleet:[a-z0-9_]+:value)(\{instance(=~|!~)"[^"]*"\})? '
    r"(>|>=|<|<=|==|!=) [0-9.]+$"
)


def rule(**changes: Any) -> dict[str, Any]:
    base = {"metric": "gpu_utilization", "threshold": "90%", "duration": "5min", "action": "notify"}
    return {**base, **changes}


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("90%", "ratio", "0.9"),
        ("0.1%", "ratio", "0.001"),
        ("500ms", "seconds", "0.5"),
        ("2s", "seconds", "2"),
        ("1min", "seconds", "60"),
        ("2GiB", "bytes", "2147483648"),
        ("512MiB", "bytes", "536870912"),
        ("1.5GB", "bytes", "1500000000"),
        (100, "number", "100"),
        (1.8, "number", "1.8"),
        ("6000", "number", "6000"),
        ("1e3", "number", "1000"),
    ],
)
def test_parse_threshold_to_base_units(text: Any, kind: str, value: str) -> None:
    parsed = alerts.parse_threshold(text)
    assert (parsed["kind"], parsed["value"], parsed["comparison"]) == (kind, value, None)


def test_parse_threshold_takes_100_percent_and_large_finite_numbers() -> None:
    assert alerts.parse_threshold("100%")["value"] == "1"
    assert alerts.parse_threshold("1e300")["value"] == "1" + "0" * 300


def test_parse_threshold_keeps_a_leading_comparison_and_the_text() -> None:
    parsed = alerts.parse_threshold("<= 10 %")
    assert parsed == {"text": "10 %", "comparison": "<=", "kind": "ratio", "value": "0.1"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ninety", "does not parse"),
        ("90%%", "does not parse"),
        ("5 parsecs", "unknown unit 'parsecs'"),
        (True, "is not a value"),
        ("", "does not parse"),
        ("150%", "is above 100%; a percentage is a share, from 0% to 100%"),
        ("100.5%", "is above 100%"),
        ("> 101 %", "is above 100%"),
        ("1e999%", "is not a finite number"),
        ("1e999", "is not a finite number"),
        ("1e300TiB", "is not a finite number"),
        ("nan", "is not a finite number"),
        ("NaN%", "is not a finite number"),
        ("-Inf", "is not a finite number"),
        (float("inf"), "is not a finite number"),
        (float("nan"), "is not a finite number"),
    ],
)
def test_parse_threshold_refuses_what_it_cannot_read(text: Any, message: str) -> None:
    with pytest.raises(alerts.RuleError, match=message):
        alerts.parse_threshold(text)


@pytest.mark.parametrize(
    ("text", "promql", "seconds"),
    [
        ("5min", "5m", "300"),
        ("1min", "1m", "60"),
        ("1m", "1m", "60"),
        ("30s", "30s", "30"),
        ("90s", "90s", "90"),
        ("1.5h", "90m", "5400"),
        ("1h30m", "90m", "5400"),
        ("2 hours", "2h", "7200"),
        ("1d", "24h", "86400"),
        ("1500ms", "1500ms", "1.5"),
        ("0s", "0s", "0"),
        ("3650d", "87600h", "315360000"),
    ],
)
def test_parse_duration_to_one_prometheus_unit(text: str, promql: str, seconds: str) -> None:
    parsed = alerts.parse_duration(text)
    assert (parsed["promql"], parsed["seconds"], parsed["text"]) == (promql, seconds, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (5, "has no unit"),
        ("5", "has no unit"),
        ("5 fortnights", "unknown unit 'fortnights'"),
        ("5min soon", "does not parse"),
        ("min5", "does not parse"),
        ("0.5ms", "finer than a millisecond"),
        ("10us", "unknown unit 'us'"),
        ("100000000w", "is longer than 10 years; Prometheus keeps durations in 64-bit millis"),
        ("3650d 1s", "is longer than 10 years"),
        ("522w", "write at most 3650d"),
    ],
)
def test_parse_duration_refuses_what_it_cannot_read(text: Any, message: str) -> None:
    with pytest.raises(alerts.RuleError, match=message):
        alerts.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("send_notification", "notify"),
        ("notify", "notify"),
        ("Send-Notification", "notify"),
        ("trigger_rollback", "rollback"),
        ("rollback", "rollback"),
        ("trigger rollback", "rollback"),
    ],
)
def test_normalize_action(text: str, action: str) -> None:
    assert alerts.normalize_action(text) == action


def test_normalize_action_lists_the_allowed_ones() -> None:
    with pytest.raises(alerts.RuleError) as caught:
        alerts.normalize_action("page_oncall")
    assert str(caught.value) == (
        "action 'page_oncall' is unknown; allowed: notify, send_notification, rollback, "
        "trigger_rollback"
    )


# --------------------------------------------------------------------------- validation


def test_the_default_rules_validate_and_cover_the_catalog() -> None:
    normalized = alerts.validate_rules(DEFAULT_RULES, CATALOG)
    assert [r["metric"] for r in normalized] == [
        "gpu_utilization", "gpu_memory_free", "swap_rate", "qps", "p99_latency", "batch_size",
        "queue_depth", "input_length_p95", "refusal_rate", "error_rate", "oom_error_rate",
        "endpoint_down",
    ]  # fmt: skip
    assert {r["metric"] for r in normalized} == set(CATALOG)
    first, oom = normalized[0], normalized[10]
    assert (first["threshold"]["value"], first["duration"]["promql"], first["action"]) == (
        "0.9", "5m", "notify",
    )  # fmt: skip
    assert (oom["threshold"]["value"], oom["duration"]["promql"], oom["action"]) == (
        "0.001", "1m", "rollback",
    )  # fmt: skip


def problems_of(rules: list[Any]) -> str:
    with pytest.raises(AnsibleFilterError) as caught:
        alerts.validate_rules(rules, CATALOG)
    return str(caught.value)


def test_an_unknown_metric_lists_the_known_ones() -> None:
    message = problems_of([rule(metric="gpu_temp")])
    assert "rule 1 (gpu_temp): metric gpu_temp is not in the catalog; known: " in message
    assert "batch_size, endpoint_down, error_rate, gpu_memory_free, gpu_utilization" in message
    assert "(or give the rule its own PromQL in expr)" in message


def test_a_unit_that_does_not_fit_the_metric_says_what_fits() -> None:
    message = problems_of([rule(threshold="500ms")])
    assert (
        "rule 1 (gpu_utilization): threshold '500ms' is a time, "
        "but gpu_utilization takes a percentage (e.g. 90%, 0.1%)"
    ) in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"metric": "p99_latency", "threshold": "90%"}, "p99_latency takes a time (e.g. 500ms"),
        ({"metric": "gpu_memory_free", "threshold": 512}, "gpu_memory_free takes a size"),
        ({"metric": "qps", "threshold": "50%"}, "qps takes a plain number"),
        ({"threshold": 0.9}, "gpu_utilization takes a percentage"),
    ],
)
def test_unit_kinds_are_checked_per_metric(changes: dict[str, Any], expected: str) -> None:
    assert expected in problems_of([rule(**changes)])


def test_every_problem_of_every_rule_is_listed_at_once() -> None:
    message = problems_of(
        [
            rule(duration="five minutes", action="page"),
            rule(name="gpu_hot", threshold="lots", severity="urgent", colour="red"),
            rule(metric="qps", threshold=None),
            "gpu_utilization > 90%",
        ]
    )
    assert message.startswith("llmfleet_alert_rules has 7 problem(s):")
    assert "rule 1 (gpu_utilization): duration 'five minutes' does not parse" in message
    assert "rule 1 (gpu_utilization): action 'page' is unknown" in message
    assert "rule 2 (gpu_hot): has unknown keys colour; allowed: metric, name," in message
    assert "rule 2 (gpu_hot): threshold 'lots' does not parse" in message
    assert (
        "rule 2 (gpu_hot): severity 'urgent' is unknown; allowed: info, warning, critical"
        in message
    )
    assert "rule 3 (qps): threshold is missing; qps takes a plain number" in message
    assert "rule 4: is not a mapping" in message


def test_limits_are_refused_at_render_time_naming_the_rule() -> None:
    message = problems_of(
        [
            rule(threshold="150%"),
            rule(name="gpu_nan", threshold="nan"),
            rule(name="gpu_huge", threshold="1e999%"),
            rule(name="gpu_forever", duration="100000000w"),
        ]
    )
    assert message.startswith("llmfleet_alert_rules has 4 problem(s):")
    assert "rule 1 (gpu_utilization): threshold '150%' is above 100%" in message
    assert "rule 2 (gpu_nan): threshold 'nan' is not a finite number" in message
    assert "rule 3 (gpu_huge): threshold '1e999%' is not a finite number" in message
    assert "rule 4 (gpu_forever): duration '100000000w' is longer than 10 years" in message


def test_two_rules_of_one_metric_need_their_own_names() -> None:
    message = problems_of([rule(), rule(threshold="98%")])
    assert "rule 2 (gpu_utilization): the name gpu_utilization is taken by rule 1" in message
    named = alerts.validate_rules([rule(), rule(name="gpu_saturated", threshold="98%")], CATALOG)
    assert [r["name"] for r in named] == ["gpu_utilization", "gpu_saturated"]


def test_a_rule_with_its_own_expr_skips_the_catalog() -> None:
    own = 'max by (instance) (DCGM_FI_DEV_GPU_TEMP{job="node"})'
    [custom] = alerts.validate_rules(
        [rule(metric="gpu_temperature", expr=f"  {own}\n", threshold=85, severity="critical")],
        CATALOG,
    )
    assert custom["catalog"] is False
    assert custom["unit"] == "number"
    assert (custom["expr"], custom["series"]) == (own, "llmfleet:gpu_temperature:value")
    assert custom["summary"] == (
        "gpu_temperature on {{ $labels.instance }} is {{ $value | humanize }}"
    )
    rules = [rule(metric="gpu_temperature", threshold=85, expr="DCGM_FI_DEV_GPU_TEMP")]
    [compiled] = alerts.compile_alerts(rules, CATALOG)
    assert compiled["expr"] == "llmfleet:gpu_temperature:value > 85"
    assert compiled["labels"]["metric"] == "gpu_temperature"
    recording = alerts.rules_file(rules, CATALOG, [])["groups"][0]["rules"]
    assert recording[-1] == {"record": "llmfleet:gpu_temperature:value",
                             "expr": "DCGM_FI_DEV_GPU_TEMP"}  # fmt: skip


def test_a_rule_with_its_own_expr_records_under_its_name() -> None:
    rules = [
        rule(metric="gpu_temperature", name="gpu-hot", expr="max by (instance) (t)", threshold=85),
        rule(metric="gpu_temperature", name="gpu_warm", expr="avg by (instance) (t)", threshold=70),
    ]
    compiled = alerts.compile_alerts(rules, CATALOG)
    assert [a["expr"] for a in compiled] == [
        "llmfleet:gpu_hot:value > 85",
        "llmfleet:gpu_warm:value > 70",
    ]
    assert [a["labels"]["metric"] for a in compiled] == ["gpu_temperature"] * 2
    recording = alerts.rules_file(rules, CATALOG, [])["groups"][0]["rules"]
    assert recording[-2:] == [
        {"record": "llmfleet:gpu_hot:value", "expr": "max by (instance) (t)"},
        {"record": "llmfleet:gpu_warm:value", "expr": "avg by (instance) (t)"},
    ]


def test_a_rule_with_its_own_expr_needs_a_series_of_its_own() -> None:
    message = problems_of(
        [
            rule(expr="DCGM_FI_DEV_GPU_UTIL / 100"),
            rule(metric="hot", name="gpu-hot", expr="t", threshold=1),
            rule(metric="hot", name="gpu_hot", expr="t", threshold=2),
        ]
    )
    assert (
        "rule 1 (gpu_utilization): with its own expr it records llmfleet:gpu_utilization:value, "
        "which the catalog records for gpu_utilization; give the rule another name "
        "(name: gpu_utilization_own)"
    ) in message
    assert (
        "rule 3 (gpu_hot): it records llmfleet:gpu_hot:value, as rule 2 does; rename one of them"
    ) in message
    assert message.startswith("llmfleet_alert_rules has 2 problem(s):")


def test_an_expr_must_not_hold_the_comparison() -> None:
    message = problems_of([rule(metric="hot", expr="DCGM_FI_DEV_GPU_TEMP > 85", threshold=1)])
    assert "expr holds the comparison >; write only the value there" in message


def test_an_expr_that_does_not_parse_fails_at_render_time_naming_the_rule() -> None:
    message = problems_of(
        [
            rule(metric="hot", expr="max by (instance) (DCGM_FI_DEV_GPU_TEMP", threshold=1),
            rule(metric="slow", expr="rate(x)", threshold="2s", duration="soon"),
        ]
    )
    assert message.startswith("llmfleet_alert_rules has 3 problem(s):")
    assert (
        "rule 1 (hot): expr 'max by (instance) (DCGM_FI_DEV_GPU_TEMP' does not parse as PromQL: "
        "unclosed left parenthesis"
    ) in message
    assert "rule 2 (slow): expr 'rate(x)' does not parse as PromQL: expected type matrix" in message
    assert "rule 2 (slow): duration 'soon'" in message, "the other problems are listed too"


@pytest.mark.parametrize(
    "expr",
    [
        'max by (instance) (DCGM_FI_DEV_GPU_TEMP{job="node"})',
        "sum by (instance) (rate(llamacpp:tokens_predicted_total[5m]))",
        "holt_winters(node_load1[1h], 0.5, 0.5)",
        "histogram_quantile(0.99, sum by (le, instance) (rate(x_bucket[5m])))",
        "a / on (instance) group_left (gpu) b",
        "llmfleet:oom_errors:rate1m > bool 0",
        "max_over_time(up[1h:5m])",
        "(up)",
        "1",
    ],
)
def test_an_expr_that_parses_is_taken(expr: str) -> None:
    assert alerts.expr_parse_problem(expr) is None


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("up[5m]", "is a range vector; a rule records an instant vector or a number"),
        ("(up[5m:1m])", "is a range vector (a subquery)"),
        ('"text"', "is a string"),
        ("x" * 2001, "expr is 2001 characters long; at most 2000 are taken"),
        ("(" * 40 + "x" + ")" * 40, "expr nests brackets 40 deep; at most 32 are taken"),
    ],
)
def test_an_expr_that_records_no_instant_value_or_is_too_big_is_refused(
    expr: str, message: str
) -> None:
    assert message in (alerts.expr_parse_problem(expr) or "")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    expr = 'label_replace(up, "dst", "' + "(" * 100 + '", "src", "(.*)")'
    assert alerts.expr_parse_problem(expr) is None


@pytest.mark.parametrize(
    ("expr", "comparison"),
    [
        ("DCGM_FI_DEV_GPU_TEMP > 85", ">"),
        ("a >= b", ">="),
        ("a<=1", "<="),
        ("up == 0", "=="),
        ("up != 1", "!="),
        ("x / y < 0.1 or z", "<"),
        ("up", None),
        ('rate(x{code=~"5..",job!="a"}[5m])', None),
        ('label_replace(m, "dst", "a>b", "src", "(.*)")', None),
        ("llmfleet:oom_errors:rate1m > bool 0", None),
        ("sum by (instance) (a) / on (instance) group_left (gpu) b", None),
    ],
)
def test_expr_comparison_reads_outside_strings_and_matchers(
    expr: str, comparison: str | None
) -> None:
    assert alerts.expr_comparison(expr) == comparison


def test_endpoint_down_takes_the_catalog_threshold() -> None:
    rules = [{"metric": "endpoint_down", "duration": "1m", "action": "notify"}]
    [down] = alerts.compile_alerts(rules, CATALOG)
    assert down["expr"] == "llmfleet:endpoint_down:value == 0"
    recording = alerts.rules_file(rules, CATALOG, [])["groups"][0]["rules"]
    assert {"record": "llmfleet:endpoint_down:value", "expr": 'up{job="llmfleet-frontdoor"}'} in (
        recording
    )


# --------------------------------------------------------------------------- empty


def test_an_empty_rule_list_fails_naming_the_variable() -> None:
    for rules in ([], None):
        with pytest.raises(AnsibleFilterError) as caught:
            alerts.compile_alerts(rules, CATALOG)
        message = str(caught.value)
        assert "llmfleet_alert_rules and llmfleet_alert_extra_rules hold no rule" in message
        assert "set llmfleet_alert_rules_allow_empty: true in the inventory" in message
    with pytest.raises(AnsibleFilterError, match="hold no rule"):
        alerts.rules_file([], CATALOG, RECORDING)


def test_rules_disabled_on_every_host_fail_like_an_empty_list() -> None:
    off = {"gpu_utilization": {"enabled": False}}
    with pytest.raises(AnsibleFilterError) as caught:
        alerts.compile_alerts([rule()], CATALOG, {"a": off, "b": off})
    assert "every rule is disabled (enabled: false) on every host" in str(caught.value)
    assert "llmfleet_alert_rules_allow_empty" in str(caught.value)
    with pytest.raises(AnsibleFilterError, match="every rule is disabled"):
        alerts.compile_alerts([rule(enabled=False)], CATALOG)


@pytest.mark.parametrize("allow", [True, "true", "yes", "True"])
def test_no_alert_on_purpose_when_the_inventory_says_so(allow: Any) -> None:
    assert alerts.compile_alerts([], CATALOG, None, allow) == []
    document = alerts.rules_file([], CATALOG, RECORDING, None, allow)
    assert document["groups"][1] == {"name": "llmfleet-alerts", "rules": []}
    assert len(document["groups"][0]["rules"]) == len(RECORDING) + len(CATALOG)


def test_allow_empty_is_true_or_false() -> None:
    with pytest.raises(AnsibleFilterError, match="llmfleet_alert_rules_allow_empty must be true"):
        alerts.compile_alerts([], CATALOG, None, "maybe")
    assert alerts.compile_alerts([rule()], CATALOG, None, "false")
    assert DEFAULTS["llmfleet_alert_rules_allow_empty"] is False


# --------------------------------------------------------------------------- compile


def test_the_compiled_alert_carries_labels_and_annotations() -> None:
    [alert] = alerts.compile_alerts([rule(action="send_notification")], CATALOG)
    assert alert == {
        "alert": "LlmfleetGpuUtilization",
        "expr": "llmfleet:gpu_utilization:value > 0.9",
        "for": "5m",
        "labels": {
            "metric": "gpu_utilization",
            "action": "notify",
            "severity": "warning",
            "rule": "gpu_utilization",
        },
        "annotations": {
            "summary": "GPU {{ $labels.gpu }} on {{ $labels.instance }} is "
            "{{ $value | humanizePercentage }} busy",
            "description": "gpu_utilization > 90% for 5min (rule gpu_utilization, action notify)",
        },
    }


def test_every_default_alert_names_host_and_value_and_routes() -> None:
    compiled = alerts.compile_alerts(DEFAULT_RULES, CATALOG)
    assert len(compiled) == 12
    for alert in compiled:
        assert "{{ $labels.instance }}" in alert["annotations"]["summary"], alert["alert"]
        assert "{{ $value" in alert["annotations"]["summary"], alert["alert"]
        assert alert["labels"]["action"] in ("notify", "rollback")
        assert alert["labels"]["severity"] in ("info", "warning", "critical")
        assert alert["labels"]["metric"] in CATALOG
        found = ALERT_EXPR.match(alert["expr"])
        assert found, alert["expr"]
        assert found["series"] == f"llmfleet:{alert['labels']['metric']}:value"


def test_a_leading_comparison_turns_the_rule_round() -> None:
    [alert] = alerts.compile_alerts(
        [rule(metric="qps", threshold="< 1", duration="30min")], CATALOG
    )
    assert alert["expr"] == "llmfleet:qps:value < 1"
    assert alert["annotations"]["description"].startswith("qps < 1 for 30min")


def test_the_rules_file_holds_both_groups() -> None:
    recording = [{"record": "llmfleet:requests:rate1m", "expr": "sum(up)"}]
    document = alerts.rules_file([rule()], CATALOG, recording)
    assert [group["name"] for group in document["groups"]] == [
        "llmfleet-recording",
        "llmfleet-alerts",
    ]
    recorded = document["groups"][0]["rules"]
    assert recorded[0] == recording[0]
    assert recorded[1:] == [
        {"record": f"llmfleet:{metric}:value", "expr": entry["expr"]}
        for metric, entry in CATALOG.items()
    ]
    assert document["groups"][1]["rules"][0]["alert"] == "LlmfleetGpuUtilization"


def test_the_recording_group_keeps_its_names_and_adds_a_value_per_metric() -> None:
    """The existing recording rules come first, unchanged (dashboards and verify read them);
    the values follow, so a catalog expr may read any of them."""
    document = alerts.rules_file(DEFAULT_RULES, CATALOG, RECORDING)
    names = [recorded["record"] for recorded in document["groups"][0]["rules"]]
    assert names[: len(RECORDING)] == [
        "llmfleet:requests:rate1m",
        "llmfleet:request_errors:rate1m",
        "llmfleet:requests_rejected:rate1m",
        "llmfleet:request_latency_seconds:p99_5m",
        "llmfleet:oom_errors:rate1m",
        "llmfleet:oom_errors:ratio_rate1m",
        "llmfleet:engine_busy_slots:total",
    ]
    assert names[len(RECORDING) :] == [f"llmfleet:{metric}:value" for metric in CATALOG]
    assert len(set(names)) == len(names)


def test_a_recording_rule_may_not_take_a_value_name() -> None:
    recording = [{"record": "llmfleet:qps:value", "expr": "sum(up)"}]
    with pytest.raises(AnsibleFilterError, match="already records llmfleet:qps:value"):
        alerts.rules_file([rule()], CATALOG, recording)


# --------------------------------------------------------------------------- overrides


def exprs(compiled: list[dict[str, Any]], name: str) -> list[tuple[str, str, str]]:
    return [(a["expr"], a["for"], a["labels"]["action"]) for a in compiled if a["alert"] == name]


def test_host_overrides_compile_to_one_rule_per_variant() -> None:
    compiled = alerts.compile_alerts(
        [rule()],
        CATALOG,
        {
            "gpu-a": {},
            "gpu-b": None,
            "gpu-c": {"gpu_utilization": {"threshold": "97%", "duration": "10min"}},
            "gpu-d": {"gpu_utilization": {"threshold": "97%", "duration": "10min"}},
            "gpu-e": {"gpu_utilization": {"action": "trigger_rollback"}},
            "gpu-f": {"gpu_utilization": {"enabled": False}},
        },
    )
    assert exprs(compiled, "LlmfleetGpuUtilization") == [
        ('llmfleet:gpu_utilization:value{instance!~"gpu-c|gpu-d|gpu-e|gpu-f"} > 0.9',
         "5m", "notify"),
        ('llmfleet:gpu_utilization:value{instance=~"gpu-c|gpu-d"} > 0.97', "10m", "notify"),
        ('llmfleet:gpu_utilization:value{instance=~"gpu-e"} > 0.9', "5m", "rollback"),
    ]  # fmt: skip


def test_the_variant_most_hosts_share_is_the_catch_all() -> None:
    group = {"qps": {"threshold": 80}}
    compiled = alerts.compile_alerts(
        [rule(metric="qps", threshold=50)],
        CATALOG,
        {"a": group, "b": group, "c": {"qps": {"threshold": 200}}},
    )
    assert exprs(compiled, "LlmfleetQps") == [
        ('llmfleet:qps:value{instance!~"c"} > 80', "5m", "notify"),
        ('llmfleet:qps:value{instance=~"c"} > 200', "5m", "notify"),
    ]


def test_a_rule_off_on_most_hosts_only_fires_on_the_rest() -> None:
    off = {"batch_size": {"enabled": False}}
    compiled = alerts.compile_alerts(
        [rule(metric="batch_size", threshold=1.8)], CATALOG, {"a": off, "b": off, "c": {}}
    )
    [only] = compiled
    assert only["expr"] == 'llmfleet:batch_size:value{instance=~"c"} > 1.8'


def test_the_same_overrides_everywhere_need_no_instance_matcher() -> None:
    same = {"gpu_utilization": {"threshold": "95%"}}
    [alert] = alerts.compile_alerts([rule()], CATALOG, {"a": same, "b": same})
    assert alert["expr"] == "llmfleet:gpu_utilization:value > 0.95"


def test_every_variant_selects_on_the_recorded_series_only() -> None:
    """Heavy overrides on every default rule: each alert is still `series{matcher} op n`,
    its series is recorded, and the hosts of one rule's variants never overlap."""
    hosts = {f"gpu-{index:02d}.dc1": {} for index in range(6)}
    hosts["gpu-01.dc1"] = {"gpu_utilization": {"threshold": "97%"}, "qps": {"enabled": False}}
    hosts["gpu-02.dc1"] = {"endpoint_down": {"duration": "5m"}, "p99_latency": {"threshold": "5s"}}
    hosts["gpu-03.dc1"] = {"oom_error_rate": {"action": "notify"}, "queue_depth": {"threshold": 3}}
    document = alerts.rules_file(DEFAULT_RULES, CATALOG, RECORDING, hosts)
    recorded = {recorded["record"] for recorded in document["groups"][0]["rules"]}
    compiled = document["groups"][1]["rules"]
    assert len(compiled) == 12 + 5  # five rules with one other variant each
    selected: dict[str, list[str]] = {}
    for alert in compiled:
        found = ALERT_EXPR.match(alert["expr"])
        assert found, alert["expr"]
        assert found["series"] in recorded
        selected.setdefault(alert["alert"], []).append(alert["expr"])
    assert selected["LlmfleetQps"] == ['llmfleet:qps:value{instance!~"gpu-01\\\\.dc1"} > 50']
    assert selected["LlmfleetEndpointDown"] == [
        'llmfleet:endpoint_down:value{instance!~"gpu-02\\\\.dc1"} == 0',
        'llmfleet:endpoint_down:value{instance=~"gpu-02\\\\.dc1"} == 0',
    ]


def test_an_override_keyed_by_metric_reaches_every_rule_of_it() -> None:
    rules = [rule(), rule(name="gpu_saturated", threshold="98%", action="rollback")]
    effective, problems = alerts.apply_overrides(
        alerts.validate_rules(rules, CATALOG), {"gpu_utilization": {"duration": "15min"}}
    )
    assert problems == []
    assert [r["duration"]["promql"] for r in effective] == ["15m", "5m"]
    effective, _ = alerts.apply_overrides(
        alerts.validate_rules(rules, CATALOG), {"gpu_saturated": {"duration": "15min"}}
    )
    assert [r["duration"]["promql"] for r in effective] == ["5m", "15m"]


def test_bad_overrides_name_the_hosts_the_rule_and_what_is_allowed() -> None:
    group = {"gpu_utilization": {"threshold": "500ms"}, "p99": {"threshold": "1s"}}
    with pytest.raises(AnsibleFilterError) as caught:
        alerts.compile_alerts(
            DEFAULT_RULES,
            CATALOG,
            {"a": group, "b": group, "c": {"qps": {"treshold": 10, "action": "page"}}},
        )
    message = str(caught.value)
    assert message.startswith("llmfleet_alert_overrides has 4 problem(s):")
    assert (
        "a, b: gpu_utilization: threshold '500ms' is a time, but gpu_utilization takes a "
        "percentage (e.g. 90%, 0.1%)"
    ) in message
    assert "a, b: p99: no rule has this name or metric; rules: gpu_utilization," in message
    assert "c: qps: unknown keys treshold; allowed: threshold, duration, action" in message
    assert "c: qps: action 'page' is unknown" in message


def test_overrides_by_host_reads_each_hosts_variable() -> None:
    hostvars = {"a": {"llmfleet_alert_overrides": {"qps": {"enabled": False}}}, "b": {}, "c": {}}
    assert alerts.overrides_by_host(hostvars, ["a", "b"]) == {
        "a": {"qps": {"enabled": False}},
        "b": {},
    }


# --------------------------------------------------------------------------- series helpers


@pytest.mark.parametrize(
    ("name", "series"),
    [
        ("gpu_utilization", "llmfleet:gpu_utilization:value"),
        ("p99_latency", "llmfleet:p99_latency:value"),
        ("oom-error-rate", "llmfleet:oom_error_rate:value"),
    ],
)
def test_recorded_series(name: str, series: str) -> None:
    assert alerts.recorded_series(name) == series


def test_instance_matcher_escapes_regex_characters() -> None:
    assert alerts.instance_matcher(["gpu-02.dc1", "gpu-01"]) == (
        'instance=~"gpu-01|gpu-02\\\\.dc1"'
    )
    assert alerts.instance_matcher(["a"], negate=True) == 'instance!~"a"'


@pytest.mark.parametrize(
    ("name", "alert"),
    [
        ("gpu_utilization", "LlmfleetGpuUtilization"),
        ("p99_latency", "LlmfleetP99Latency"),
        ("oom-error-rate", "LlmfleetOomErrorRate"),
    ],
)
def test_alert_name(name: str, alert: str) -> None:
    assert alerts.alert_name(name) == alert


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("ratio", "{{ $value | humanizePercentage }}"),
        ("seconds", "{{ $value | humanizeDuration }}"),
        ("bytes", "{{ $value | humanize1024 }}B"),
        ("number", "{{ $value | humanize }}"),
    ],
)
def test_render_summary_turns_placeholders_into_prometheus_templates(kind: str, value: str) -> None:
    assert alerts.render_summary("GPU {gpu} on {instance}: {value}", kind) == (
        f"GPU {{{{ $labels.gpu }}}} on {{{{ $labels.instance }}}}: {value}"
    )
