"""The default alert rules, compiled from group_vars/all/alerts.yml, checked and tested by promtool.

promtool comes from scripts/debian-tool.sh (PATH, else Debian's `prometheus` package unpacked
under $LLMFLEET_CACHE/tools; never installed). The fixtures compile the real default rules
with the monitoring role's catalog into a tmp dir next to copies of tests/rules/*.test.yml,
then `promtool test rules` shows each default rule firing after its duration above its
threshold, not before and not below. The alerts read the series the recording group records
(llmfleet:<metric>:value); Prometheus evaluates the two groups independently, so every test
file runs twice: recording group first (as written) and alert group first (an alert reads
a value one evaluation old). playbooks/render_alert_rules.yml is run as operators run it:
with the example and the default inventory, with host overrides, and with mistakes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from helpers import load_module_file

REPO = Path(__file__).resolve().parents[2]
RULE_TESTS = REPO / "tests" / "rules"
ALERTS_FILE = REPO / "group_vars" / "all" / "alerts.yml"
CATALOG_FILE = REPO / "roles" / "monitoring" / "vars" / "main.yml"
PLAYBOOK = REPO / "playbooks" / "render_alert_rules.yml"

#: The overrides tests/rules/overrides.test.yml is written for.
OVERRIDES_BY_HOST: dict[str, Any] = {
    "gpu-std": {},
    "gpu-big": {
        "gpu_utilization": {"threshold": "97%", "duration": "10min", "action": "trigger_rollback"}
    },
    "gpu-lab": {"gpu_utilization": {"enabled": False}},
}
#: A rule with its own expr, and the overrides tests/rules/own_expr.test.yml is written for.
OWN_EXPR_RULE: dict[str, Any] = {
    "metric": "gpu_temperature",
    "expr": 'max by (instance) (DCGM_FI_DEV_GPU_TEMP{job="node"})',
    "threshold": 85,
    "duration": "5min",
    "action": "notify",
    "summary": "hottest GPU of {instance} at {value} degrees C",
}
OWN_EXPR_OVERRIDES: dict[str, Any] = {
    "gpu-hot": {},
    "gpu-cool": {},
    "gpu-lab": {"gpu_temperature": {"threshold": 95, "severity": "info"}},
}
#: The group orders every promtool test file runs in.
GROUP_ORDERS = {
    "recording-first": ["llmfleet-recording", "llmfleet-alerts"],
    "alerts-first": ["llmfleet-alerts", "llmfleet-recording"],
}

alerts = load_module_file(
    "llmfleet_alerts_filters", REPO / "plugins" / "filter" / "llmfleet_alerts.py"
)


def plain(data: Any) -> Any:
    """Ansible's tagged strings as plain ones, for yaml.safe_dump."""
    return json.loads(json.dumps(data))


def load(path: Path) -> dict[str, Any]:
    """A vars file as Ansible reads it (`!unsafe` included)."""
    return DataLoader().load_from_file(str(path))


@pytest.fixture(scope="module")
def defaults() -> dict[str, Any]:
    catalog = load(CATALOG_FILE)
    return {
        "rules": load(ALERTS_FILE)["llmfleet_alert_rules"],
        "catalog": catalog["monitoring_alert_catalog"],
        "recording": catalog["monitoring_recording_rules"],
    }


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory, defaults: dict[str, Any]) -> Path:
    """A folder with the compiled default rules (plain and overridden) and the promtool tests."""
    folder = tmp_path_factory.mktemp("rules")
    for name, rules, overrides in (
        ("llmfleet.rules.yml", defaults["rules"], None),
        ("llmfleet-overrides.rules.yml", defaults["rules"], OVERRIDES_BY_HOST),
        ("llmfleet-own.rules.yml", [*defaults["rules"], OWN_EXPR_RULE], OWN_EXPR_OVERRIDES),
    ):
        document = alerts.rules_file(rules, defaults["catalog"], defaults["recording"], overrides)
        (folder / name).write_text(yaml.safe_dump(plain(document), sort_keys=False))
    for test_file in RULE_TESTS.glob("*.test.yml"):
        suite = yaml.safe_load(test_file.read_text())
        assert suite["group_eval_order"] == GROUP_ORDERS["recording-first"], test_file.name
        for order, groups in GROUP_ORDERS.items():
            suite["group_eval_order"] = groups
            (folder / f"{order}.{test_file.name}").write_text(yaml.safe_dump(suite))
    return folder


def run(command: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def test_the_compiled_rules_pass_promtool_check(promtool: str, compiled: Path) -> None:
    for name in ("llmfleet.rules.yml", "llmfleet-overrides.rules.yml", "llmfleet-own.rules.yml"):
        result = run([promtool, "check", "rules", str(compiled / name)])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


def test_every_default_rule_has_a_promtool_test(defaults: dict[str, Any]) -> None:
    """Each default alert has a case where it fires and one where it must not yet."""
    fired: set[str] = set()
    quiet: set[str] = set()
    for test_file in RULE_TESTS.glob("*.test.yml"):
        for group in yaml.safe_load(test_file.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    expected = {alerts.alert_name(rule.get("name", rule["metric"])) for rule in defaults["rules"]}
    assert len(expected) == 12
    assert expected - (fired & quiet) == set(), "default rules without a fire/no-fire test"


@pytest.mark.parametrize("order", sorted(GROUP_ORDERS))
@pytest.mark.parametrize("test_file", sorted(p.name for p in RULE_TESTS.glob("*.test.yml")))
def test_promtool_unit_tests_pass(
    promtool: str, compiled: Path, test_file: str, order: str
) -> None:
    result = run([promtool, "test", "rules", f"{order}.{test_file}"], cwd=compiled)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def alert_rules(document: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The compiled alert rules of one alert name, in a rules document."""
    (group,) = [group for group in document["groups"] if group["name"] == "llmfleet-alerts"]
    return [rule for rule in group["rules"] if rule["alert"] == name]


def rerun_with(
    promtool: str, compiled: Path, tmp_path: Path, rules_name: str, test_file: str, change: Any
) -> subprocess.CompletedProcess[str]:
    """promtool on `test_file` with the compiled `rules_name` changed by `change(document)`."""
    document = yaml.safe_load((compiled / rules_name).read_text())
    change(document)
    (tmp_path / rules_name).write_text(yaml.safe_dump(document, sort_keys=False))
    shutil.copy(compiled / f"recording-first.{test_file}", tmp_path / test_file)
    return run([promtool, "test", "rules", test_file], cwd=tmp_path)


def test_promtool_tests_fail_when_a_threshold_moves(
    promtool: str, compiled: Path, tmp_path: Path
) -> None:
    """The tests are sharp: a gpu_utilization threshold of 96% instead of 90% fails them."""

    def move(document: dict[str, Any]) -> None:
        (alert,) = alert_rules(document, "LlmfleetGpuUtilization")
        assert alert["expr"] == "llmfleet:gpu_utilization:value > 0.9"
        alert["expr"] = "llmfleet:gpu_utilization:value > 0.96"

    result = rerun_with(
        promtool, compiled, tmp_path, "llmfleet.rules.yml", "resources.test.yml", move
    )
    assert result.returncode != 0
    assert "LlmfleetGpuUtilization" in result.stdout + result.stderr


def test_promtool_tests_fail_without_the_per_host_matchers(
    promtool: str, compiled: Path, tmp_path: Path
) -> None:
    """The override suite is sharp: the variants without their instance matchers fail it."""

    def unselect(document: dict[str, Any]) -> None:
        variants = alert_rules(document, "LlmfleetGpuUtilization")
        assert [variant["expr"] for variant in variants] == [
            'llmfleet:gpu_utilization:value{instance!~"gpu-big|gpu-lab"} > 0.9',
            'llmfleet:gpu_utilization:value{instance=~"gpu-big"} > 0.97',
        ]
        for variant in variants:
            variant["expr"] = re.sub(r"\{[^}]*\}", "", variant["expr"])

    result = rerun_with(
        promtool, compiled, tmp_path, "llmfleet-overrides.rules.yml", "overrides.test.yml", unselect
    )
    assert result.returncode != 0
    assert "gpu-lab" in result.stdout + result.stderr


# --------------------------------------------------------------------------- the playbook


def playbook(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "ansible-playbook"
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run(
        [str(binary), str(PLAYBOOK), *args], cwd=cwd, capture_output=True, text=True,
        check=False, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("inventory", ["inventories/example/hosts.yml", None])
def test_render_playbook_writes_the_compiled_rules(
    promtool: str, compiled: Path, tmp_path: Path, inventory: str | None
) -> None:
    dest = tmp_path / "out" / "llmfleet.rules.yml"
    (tmp_path / "out").mkdir()
    args = ["-i", inventory] if inventory else []
    result = playbook(*args, "-e", f"llmfleet_alert_rules_dest={dest}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert run([promtool, "check", "rules", str(dest)]).returncode == 0
    written = yaml.safe_load(dest.read_text())
    expected = yaml.safe_load((compiled / "llmfleet.rules.yml").read_text())
    assert written == expected
    assert dest.read_text().startswith("#")  # the ansible_managed header


def test_render_playbook_fails_without_a_destination() -> None:
    result = playbook("-i", "inventories/example/hosts.yml")
    assert result.returncode != 0
    assert "llmfleet_alert_rules_dest is missing" in result.stdout


def write_inventory(folder: Path, host_vars: dict[str, Any], group_vars: dict[str, Any]) -> Path:
    hosts = {
        "all": {"children": {"fleet": {"hosts": {"gpu-a": None, "gpu-b": None, "gpu-c": None}}}}
    }
    (folder / "hosts.yml").write_text(yaml.safe_dump(hosts))
    for kind, entries in (("host_vars", host_vars), ("group_vars", group_vars)):
        (folder / kind).mkdir()
        for name, data in entries.items():
            (folder / kind / f"{name}.yml").write_text(yaml.safe_dump(data))
    return folder / "hosts.yml"


def test_render_playbook_compiles_group_and_host_overrides(promtool: str, tmp_path: Path) -> None:
    inventory = write_inventory(
        tmp_path,
        host_vars={"gpu-c": {"llmfleet_alert_overrides": {"qps": {"threshold": 200}}}},
        group_vars={"fleet": {"llmfleet_alert_overrides": {"qps": {"threshold": 80}}}},
    )
    dest = tmp_path / "rules.yml"
    result = playbook("-i", str(inventory), "-e", f"llmfleet_alert_rules_dest={dest}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert run([promtool, "check", "rules", str(dest)]).returncode == 0
    groups = {group["name"]: group["rules"] for group in yaml.safe_load(dest.read_text())["groups"]}
    qps = [rule["expr"] for rule in groups["llmfleet-alerts"] if rule["alert"] == "LlmfleetQps"]
    assert qps == [
        'llmfleet:qps:value{instance!~"gpu-c"} > 80',
        'llmfleet:qps:value{instance=~"gpu-c"} > 200',
    ]
    recorded = {rule["record"]: rule["expr"] for rule in groups["llmfleet-recording"]}
    assert recorded["llmfleet:qps:value"] == "llmfleet:requests:rate1m"


@pytest.mark.parametrize(
    ("host_vars", "group_vars", "messages"),
    [
        pytest.param(
            {"gpu-b": {"llmfleet_alert_overrides": {"gpu_utilization": {"threshold": "500ms"}}}},
            {},
            ["gpu-b: gpu_utilization: threshold '500ms' is a time", "takes a percentage"],
            id="fails_on_a_bad_rule_before_writing",
        ),
        pytest.param(
            {},
            {"fleet": {"llmfleet_alert_rules": []}},
            [
                "llmfleet_alert_rules and llmfleet_alert_extra_rules hold no rule",
                "set llmfleet_alert_rules_allow_empty: true",
            ],
            id="refuses_an_empty_rule_list",
        ),
    ],
)
def test_render_playbook_refuses_and_writes_nothing(
    tmp_path: Path,
    host_vars: dict[str, Any],
    group_vars: dict[str, Any],
    messages: list[str],
) -> None:
    inventory = write_inventory(tmp_path, host_vars=host_vars, group_vars=group_vars)
    dest = tmp_path / "rules.yml"
    result = playbook("-i", str(inventory), "-e", f"llmfleet_alert_rules_dest={dest}")
    assert result.returncode != 0
    for message in messages:
        assert message in result.stdout
    assert not dest.exists()


def test_render_playbook_writes_no_alert_when_the_inventory_says_so(
    promtool: str, tmp_path: Path
) -> None:
    inventory = write_inventory(
        tmp_path,
        host_vars={},
        group_vars={
            "fleet": {"llmfleet_alert_rules": [], "llmfleet_alert_rules_allow_empty": True}
        },
    )
    dest = tmp_path / "rules.yml"
    result = playbook("-i", str(inventory), "-e", f"llmfleet_alert_rules_dest={dest}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert run([promtool, "check", "rules", str(dest)]).returncode == 0
    groups = {group["name"]: group["rules"] for group in yaml.safe_load(dest.read_text())["groups"]}
    assert groups["llmfleet-alerts"] == []
    assert "llmfleet:gpu_utilization:value" in [
        rule["record"] for rule in groups["llmfleet-recording"]
    ]
