"""Bad input to the alert rule filters: every refusal, at render time, naming the rule.

Each case calls the filter as Ansible does and asserts: it raises the filter's own error
(AnsibleFilterError, never a traceback of another kind, never a crash of the process), the
message names the rule (or the host and the override, or the variable) and the value, and
the inputs are left as they were (the filter changes nothing it was given).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from helpers import load_module_file, monitoring_role_vars

REPO = Path(__file__).resolve().parents[2]
alerts = load_module_file(
    "llmfleet_alerts_bad_inputs", REPO / "plugins" / "filter" / "llmfleet_alerts.py"
)

CATALOG: dict[str, Any] = monitoring_role_vars()["monitoring_alert_catalog"]


def rule(**changes: Any) -> dict[str, Any]:
    base = {"metric": "gpu_utilization", "threshold": "90%", "duration": "5min", "action": "notify"}
    return {key: value for key, value in {**base, **changes}.items() if value is not None}


def own(expr: Any, **changes: Any) -> dict[str, Any]:
    return rule(**{"metric": "custom_value", "expr": expr, "threshold": 1, **changes})


def refused(call: Any, *args: Any) -> str:
    """The message of the filter's own error; the arguments are checked to be untouched."""
    before = copy.deepcopy(args)
    with pytest.raises(AnsibleFilterError) as caught:
        call(*args)
    assert type(caught.value) is AnsibleFilterError
    assert args == before, "the filter changed its input"
    return str(caught.value)


def changed(field: str, *cases: tuple[Any, str]) -> list[Any]:
    """A catalog rule with `field` changed to each bad value (None: left out), and the words
    its refusal says after "rule 1 (gpu_utilization): <field> "."""
    return [
        pytest.param(
            rule(**{field: value}),
            f"rule 1 (gpu_utilization): {field} {words}",
            id=f"{field} {'missing' if value is None else value}",
        )
        for value, words in cases
    ]


def own_exprs(*cases: tuple[str, Any, str]) -> list[Any]:
    """A rule with each bad expr of its own, and the words its refusal says after
    "rule 1 (custom_value): expr "."""
    return [
        pytest.param(own(expr), f"rule 1 (custom_value): expr {words}", id=f"expr {name}")
        for name, expr, words in cases
    ]


RULES = [
    *changed(
        "threshold",
        ("150%", "'150%' is above 100%"),
        ("1e999%", "'1e999%' is not a finite number"),
        ("nan", "'nan' is not a finite number"),
        ("90 parsecs", "'90 parsecs' has an unknown unit 'parsecs'"),
        ("2s", "'2s' is a time, but gpu_utilization takes a percentage"),
        ([90], "[90] is not a value"),
        (None, "is missing; gpu_utilization takes a percentage"),
    ),
    *changed(
        "duration",
        ("100000000w", "'100000000w' is longer than 10 years"),
        ("5", "'5' has no unit"),
        ("soon", "'soon' does not parse"),
        ("1.0001s", "'1.0001s' is finer than a millisecond"),
        (None, "is missing"),
    ),
    *changed("action", ("reboot", "'reboot' is unknown; allowed: notify")),
    *changed("severity", ("fatal", "'fatal' is unknown; allowed: info, warning, critical")),
    *changed("enabled", ("yes", "'yes' is not true or false")),
    *changed("summary", (["x"], "['x'] is not a string")),
    pytest.param(
        rule(treshold="90%"),
        "rule 1 (gpu_utilization): has unknown keys treshold; allowed: metric",
        id="unknown key",
    ),
    pytest.param(
        rule(metric="gpu_temp"),
        "rule 1 (gpu_temp): metric gpu_temp is not in the catalog",
        id="unknown metric",
    ),
    pytest.param(
        rule(metric="gpu util"),
        "rule 1 (gpu util): metric 'gpu util' is missing or not a name",
        id="metric not a name",
    ),
    pytest.param(rule(name="a b"), "rule 1 (a b): name 'a b' is not a name", id="name not a name"),
    pytest.param(
        "gpu_utilization > 90%", "rule 1: is not a mapping with metric", id="rule not a mapping"
    ),
    *own_exprs(
        (
            "unclosed",
            "max by (instance) (DCGM_FI_DEV_GPU_TEMP",
            "'max by (instance) (DCGM_FI_DEV_GPU_TEMP' does not parse as PromQL: unclosed left "
            "parenthesis",
        ),
        (
            "unknown function",
            "nosuchfunc(up)",
            "'nosuchfunc(up)' does not parse as PromQL: unknown function with name 'nosuchfunc'",
        ),
        ("wrong argument", "rate(up)", "'rate(up)' does not parse as PromQL: expected type matrix"),
        ("dangling operator", "up +", "'up +' does not parse as PromQL"),
        ("bad regex", 'up{job=~"["}', "'up{job=~\"[\"}' does not parse as PromQL: illegal regex"),
        ("range vector", "up[5m]", "'up[5m]' is a range vector"),
        ("subquery", "up[5m:1m]", "'up[5m:1m]' is a range vector (a subquery)"),
        ("string", '"up"', "'\"up\"' is a string"),
        ("too long", "up + " * 500 + "up", "is 2502 characters long; at most 2000"),
        ("nested 10000 deep", "(" * 10_000 + "up" + ")" * 10_000, "is 20002 characters long"),
        ("nested 40 deep", "(" * 40 + "up" + ")" * 40, "nests brackets 40 deep; at most 32"),
        ("with a comparison", "up > 0", "holds the comparison >"),
        ("empty", "  ", "must be a PromQL expression (a string)"),
        ("a number", 5, "must be a PromQL expression (a string)"),
    ),
]


@pytest.mark.parametrize(("bad", "words"), RULES)
def test_a_bad_rule_fails_at_render_time_naming_the_rule(bad: Any, words: str) -> None:
    message = refused(alerts.compile_alerts, [rule(name="fine"), bad], CATALOG)
    assert message.startswith("llmfleet_alert_rules has ")
    assert words.replace("rule 1", "rule 2") in message
    assert "rule 2" in message and "rule 1 (fine)" not in message


def test_two_rules_of_one_name_and_a_taken_series_are_named() -> None:
    message = refused(
        alerts.validate_rules,
        [
            rule(),
            rule(threshold="95%"),
            own("up", name="gpu_utilization_x", metric="gpu_utilization"),
        ],
        CATALOG,
    )
    assert "rule 2 (gpu_utilization): the name gpu_utilization is taken by rule 1" in message


def test_a_rules_variable_that_is_no_list_is_named() -> None:
    message = refused(alerts.compile_alerts, "gpu_utilization: 90%", CATALOG)
    assert message == "llmfleet_alert_rules must be a list of rules"


@pytest.mark.parametrize("rules", [[], [rule(enabled=False)]], ids=["empty", "all disabled"])
def test_no_rule_at_all_is_refused_naming_the_variable(rules: list[Any]) -> None:
    message = refused(alerts.compile_alerts, rules, CATALOG)
    assert "so the fleet would run unwatched" in message
    assert "llmfleet_alert_rules_allow_empty: true" in message


def test_allow_empty_that_is_no_boolean_is_named() -> None:
    message = refused(alerts.compile_alerts, [], CATALOG, None, "maybe")
    assert message == "llmfleet_alert_rules_allow_empty must be true or false, not 'maybe'"


OVERRIDES = [
    ("unknown rule", {"gpu_utilisation": {"threshold": "95%"}}, "gpu02: gpu_utilisation: no "
     "rule has this name or metric"),
    ("unknown key", {"gpu_utilization": {"treshold": "95%"}}, "gpu02: gpu_utilization: unknown "
     "keys treshold"),
    ("bad threshold", {"gpu_utilization": {"threshold": "150%"}}, "gpu02: gpu_utilization: "
     "threshold '150%' is above 100%"),
    ("bad duration", {"gpu_utilization": {"duration": "100000000w"}}, "gpu02: gpu_utilization: "
     "duration '100000000w' is longer than 10 years"),
    ("changes not a mapping", {"gpu_utilization": "95%"}, "gpu02: gpu_utilization: must be a "
     "mapping with threshold"),
    ("overrides not a mapping", ["gpu_utilization"], "gpu02: must be a mapping of rule name"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "words"), [case[1:] for case in OVERRIDES], ids=[case[0] for case in OVERRIDES]
)
def test_a_bad_override_names_the_host_and_the_rule(overrides: Any, words: str) -> None:
    message = refused(alerts.compile_alerts, [rule()], CATALOG, {"gpu01": {}, "gpu02": overrides})
    assert message.startswith("llmfleet_alert_overrides has 1 problem(s):")
    assert words in message


def test_a_recording_rule_that_takes_a_value_name_is_named() -> None:
    message = refused(
        alerts.rules_file,
        [rule()],
        CATALOG,
        [{"record": "llmfleet:gpu_utilization:value", "expr": "up"}],
    )
    assert "monitoring_recording_rules already records llmfleet:gpu_utilization:value" in message


def test_without_the_parser_an_own_expr_is_refused_not_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A control node without promql-parser cannot check the expr: it says so, by rule."""
    monkeypatch.setitem(sys.modules, "promql_parser", None)  # import fails
    message = refused(alerts.compile_alerts, [own("up")], CATALOG)
    assert (
        "rule 1 (custom_value): expr cannot be checked: the Python package promql-parser is "
        in (message)
    )
    [compiled] = alerts.compile_alerts([rule()], CATALOG)  # catalog rules need no parser
    assert compiled["alert"] == "LlmfleetGpuUtilization"
