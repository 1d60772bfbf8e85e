"""Every unit the fleet runs is sandboxed: `systemd-analyze security` scores each at most 2.0.

Run by verify.yml (molecule/resources/testinfra.yml) on every host. The units of the host's
groups that run there (a timer's service: when its timer is active; the engine: each running
color) are scored by the host's own systemd, and a `host unit score` line for each is printed
into the verify step's output. The same units, rendered from the roles' templates and scored
offline, are tests/unit/test_unit_hardening.py.
"""

from __future__ import annotations

import re

testinfra_hosts = ["ansible://all"]

MAX_EXPOSURE = 2.0

# The units each inventory group runs, by role: offline_mirror; monitoring and
# rollback_receiver; inference_service (`llmfleet-engine@`: its running colors), front_door
# and node_metrics; node_metrics' GPU collector on the simulated GPU host.
UNITS_BY_GROUP = {
    "mirror": ["nginx.service"],
    "monitoring": [
        "prometheus.service",
        "prometheus-alertmanager.service",
        "llmfleet-rollback-receiver.service",
    ],
    "fleet": [
        "llmfleet-engine@",
        "caddy.service",
        "prometheus-node-exporter.service",
        "mtail.service",
    ],
    "gpu_sim": ["llmfleet-gpu-metrics.service"],
}
# Services a timer starts: they run while their timer is active.
TIMERS = {"llmfleet-gpu-metrics.service": "llmfleet-gpu-metrics.timer"}

_SCORE = re.compile(r"Overall exposure level for (\S+): ([0-9]+(?:\.[0-9]+)?)")


def expected_units(host) -> list[str]:
    groups = host.ansible.get_variables()["group_names"]
    return [unit for group in groups for unit in UNITS_BY_GROUP.get(group, [])]


def is_active(host, unit: str) -> bool:
    return host.run("systemctl is-active --quiet %s", TIMERS.get(unit, unit)).rc == 0


def running_units(host, expected: list[str]) -> tuple[list[str], list[str]]:
    """(units of the host's groups that run, those that do not), templates as their instances."""
    running, idle = [], []
    for unit in expected:
        if unit.endswith("@"):
            listed = host.check_output(
                "systemctl list-units --state=active --plain --no-legend %s", f"{unit}*.service"
            )
            colors = [line.split()[0] for line in listed.splitlines() if line.strip()]
            (running if colors else idle).extend(colors or [f"{unit}*.service"])
        else:
            (running if is_active(host, unit) else idle).append(unit)
    return running, idle


def exposure(host, unit: str) -> float:
    report = host.check_output("systemd-analyze security --no-pager %s", unit)
    found = _SCORE.search(report.splitlines()[-1])
    assert found, f"no overall exposure level for {unit}: {report.splitlines()[-1]!r}"
    return float(found.group(2))


def test_every_running_unit_scores_at_most_2(host, capsys) -> None:
    name = host.backend.get_hostname()
    expected = expected_units(host)
    assert expected, f"{name} is in none of the groups {', '.join(UNITS_BY_GROUP)}"
    running, idle = running_units(host, expected)
    assert running, f"none of {', '.join(expected)} runs on {name}"
    scores = {unit: exposure(host, unit) for unit in running}
    with capsys.disabled():
        for unit, score in scores.items():
            print(f"{name} {unit} {score:.1f}")
        for unit in idle:
            print(f"{name} {unit} not running (not scored)")
    over = {unit: score for unit, score in scores.items() if score > MAX_EXPOSURE}
    assert not over, f"{name}: exposure above {MAX_EXPOSURE} for {over}"
