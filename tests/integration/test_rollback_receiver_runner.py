"""The rollback receiver with the real ansible-runner, and its role templates rendered by Ansible.

A tiny playbook in tmp_path (connection local, two hosts) stands in for playbooks/rollback.yml:
each host it runs on writes a file named after itself. An alert posted to the real HTTP server
on 127.0.0.1 must roll back exactly the alert's host, once, and the log and the counters must
say so. No network beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import prometheus_samples, receiver_on_loopback

from llmfleet import rollback_receiver as rr

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "rollback_receiver"
TEMPLATES = ROLE / "templates"
TOKEN = "integration-token-42"

PLAYBOOK = """\
---
- name: Roll back (test double of playbooks/rollback.yml)
  hosts: all
  gather_facts: false
  tasks:
    - name: Fail where asked to
      ansible.builtin.fail:
        msg: "rollback of {{ inventory_hostname }} failed on purpose"
      when: inventory_hostname in fail_on
    - name: Leave a mark of this host's rollback
      ansible.builtin.copy:
        content: "{{ inventory_hostname }} rolled back\\n"
        dest: "{{ marker_dir }}/{{ inventory_hostname }}"
        mode: "0644"
"""


def alert(instance: str, fingerprint: str, name: str = "EngineErrorRate") -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {
            "alertname": name,
            "instance": instance,
            "action": "rollback",
            "metric": "llamacpp:requests_failed_ratio",
            "severity": "critical",
        },
        "annotations": {},
        "startsAt": "2026-05-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def post(port: int, alerts: list[dict[str, Any]], expect: int = 200) -> dict[str, Any]:
    document = {"version": "4", "status": "firing", "alerts": alerts, "groupLabels": {}}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST",
            "/alertmanager",
            body=json.dumps(document),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = response.read()
        assert response.status == expect, body
        return json.loads(body)
    finally:
        connection.close()


def metrics(port: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        return prometheus_samples(connection.getresponse().read().decode())
    finally:
        connection.close()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A playbook, a two-host inventory (group `fleet`) and a token, as on a monitoring host."""
    (tmp_path / "rollback.yml").write_text(PLAYBOOK)
    inventory = {
        "all": {
            "children": {
                "fleet": {
                    "hosts": {"alpha": {}, "beta": {}},
                    "vars": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": sys.executable,
                    },
                }
            }
        }
    }
    (tmp_path / "hosts.yml").write_text("---\n" + yaml.safe_dump(inventory))
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "marks").mkdir()
    return tmp_path


@pytest.fixture
def serve(site: Path) -> Iterator[Callable[[list[str]], tuple[rr.Receiver, int]]]:
    running = contextlib.ExitStack()

    def start(fail_on: list[str]) -> tuple[rr.Receiver, int]:
        config = rr.parse_config(
            {
                "token_file": "token",
                "playbook": "rollback.yml",
                "inventory": "hosts.yml",
                "state_dir": "state",
                "log_file": "log/actions.jsonl",
                "cooldown_seconds": 900,
                "extravars": {"marker_dir": str(site / "marks"), "fail_on": fail_on},
                "run_timeout_seconds": 120,
            },
            site,
        )
        assert rr.check_paths(config) == []
        receiver = rr.Receiver(config, rr.read_token(config.token_file), _runner(config))
        return receiver, running.enter_context(receiver_on_loopback(receiver, stop_timeout=60))

    with running:
        yield start


def _runner(config: rr.ReceiverConfig) -> rr.RunFunction:
    return lambda request: rr.run_rollback(config, request)


def records(receiver: rr.Receiver) -> list[dict[str, Any]]:
    return [json.loads(line) for line in receiver.config.log_file.read_text().splitlines()]


def test_an_alert_rolls_back_only_its_host_once(
    site: Path, serve: Callable[[list[str]], tuple[rr.Receiver, int]]
) -> None:
    receiver, port = serve([])
    # A group name never becomes a wider --limit: the inventory check refuses it before
    # anything is recorded (no cool-down spent, no log line, no series).
    refused = post(port, [alert("fleet:9100", "fp-group")], expect=422)
    assert refused["refused"] == [
        {
            "alertname": "EngineErrorRate",
            "instance": "fleet:9100",
            "reason": "fleet is a group of the inventory, not a host",
        }
    ]
    answer = post(
        port,
        [
            alert("alpha:9100", "fp-alpha"),
            alert("alpha:8080", "fp-alpha-2", name="EngineDown"),
        ],
    )
    assert [d["decision"] for d in answer["decisions"]] == ["started", "skipped_cooldown"]
    assert receiver.wait_idle(180), "the rollback runs did not finish in 180 s"

    assert sorted(path.name for path in (site / "marks").iterdir()) == ["alpha"]
    assert (site / "marks" / "alpha").read_text() == "alpha rolled back\n"

    finished = {r["host"]: r for r in records(receiver) if r["event"] == "finished"}
    assert set(finished) == {"alpha"}
    assert all(r.get("host") != "fleet" for r in records(receiver))
    alpha = finished["alpha"]
    assert (alpha["result"], alpha["runner_status"], alpha["rc"]) == ("successful", "successful", 0)
    assert alpha["fingerprint"] == "fp-alpha"
    assert alpha["alertname"] == "EngineErrorRate"
    assert alpha["duration_seconds"] > 0
    run_dir = Path(alpha["private_data_dir"])
    assert run_dir.parent == site / "state" / "runs"
    [artifact] = (run_dir / "artifacts").iterdir()
    command = json.loads((artifact / "command").read_text())["command"]
    assert command[command.index("--limit") + 1] == "alpha"
    assert str(site / "rollback.yml") in command

    counters = metrics(port)
    assert counters['llmfleet_rollbacks_total{host="alpha",result="successful"}'] == 1
    assert not any('host="fleet"' in name for name in counters)
    assert counters['llmfleet_rollback_alerts_total{decision="started"}'] == 1
    assert counters['llmfleet_rollback_alerts_total{decision="skipped_cooldown"}'] == 1
    assert counters['llmfleet_rollback_requests_refused_total{reason="not_a_host"}'] == 1
    state = json.loads((site / "state" / "cooldown.json").read_text())
    assert set(state["last_rollback"]) == {"alpha"}


def test_a_failing_rollback_is_recorded_as_failed(
    site: Path, serve: Callable[[list[str]], tuple[rr.Receiver, int]]
) -> None:
    receiver, port = serve(["beta"])
    refused = post(port, [alert("gamma:9100", "fp-unknown")], expect=422)
    assert refused["refused"][0]["reason"] == (
        f"gamma is not a host of the inventory {site / 'hosts.yml'}"
    )
    answer = post(port, [alert("beta", "fp-beta")])
    assert [d["decision"] for d in answer["decisions"]] == ["started"]
    assert receiver.wait_idle(180), "the rollback runs did not finish in 180 s"
    assert list((site / "marks").iterdir()) == []
    finished = {r["host"]: r for r in records(receiver) if r["event"] == "finished"}
    assert finished["beta"]["result"] == "failed"
    assert finished["beta"]["runner_status"] == "failed"
    assert finished["beta"]["rc"] == 2
    assert "gamma" not in finished
    counters = metrics(port)
    assert counters['llmfleet_rollbacks_total{host="beta",result="failed"}'] == 1
    assert not any('host="gamma"' in name for name in counters)


ROLE_VARS = {
    "rollback_receiver_user": "llmfleet-receiver",
    "llmfleet_receiver_listen_address": "127.0.0.1",
    "llmfleet_receiver_port": 9095,
    "llmfleet_receiver_cooldown_seconds": 600,
    "rollback_receiver_extravars": {"rollback_reason": "alert"},
    "rollback_receiver_environment": {"ANSIBLE_FORKS": "1"},
    "rollback_receiver_run_timeout_seconds": 1800,
    "rollback_receiver_keep_runs": 20,
    "rollback_receiver_inventory_cache_seconds": 60,
    "rollback_receiver_limits": {"max_connections": 16, "max_body_bytes": 1048576},
    "rollback_receiver_ansible_cfg": "",
    "rollback_receiver_project_dir": "",
}


def test_the_role_templates_render_a_valid_configuration_and_unit(site: Path) -> None:
    role_vars = {
        **ROLE_VARS,
        "rollback_receiver_venv": "/opt/llmfleet/venv",
        "rollback_receiver_config_dir": str(site),
        # The role's vars/main.yml derives it from the config dir: here, the site's token.
        "__rollback_receiver_token_file": str(site / "token"),
        "rollback_receiver_state_dir": str(site / "state"),
        "rollback_receiver_log_file": str(site / "log" / "actions.jsonl"),
        "rollback_receiver_playbook": str(site / "rollback.yml"),
        "rollback_receiver_inventory": str(site / "hosts.yml"),
    }
    render = {
        "name": "Render the receiver's templates",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {**role_vars, "ansible_python_interpreter": sys.executable},
        "tasks": [
            {
                "name": "Render",
                "ansible.builtin.template": {
                    "src": str(TEMPLATES / "{{ item }}.j2"),
                    "dest": str(site / "{{ item | basename }}"),
                    "mode": "0644",
                },
                "loop": [
                    "etc/llmfleet-receiver/receiver.yml",
                    "etc/systemd/system/llmfleet-rollback-receiver.service",
                ],
            }
        ],
    }
    (site / "render.yml").write_text(yaml.safe_dump([render]))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "render.yml"],
        cwd=site,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "ANSIBLE_HOME": str(site)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    config = rr.load_config(site / "receiver.yml")
    assert (config.address, config.port, config.cooldown_seconds) == ("127.0.0.1", 9095, 600)
    assert config.playbook == site / "rollback.yml"
    assert config.inventory == site / "hosts.yml"
    assert config.state_dir == site / "state"
    assert config.extravars == {"rollback_reason": "alert"}
    assert config.environment == {"ANSIBLE_FORKS": "1"}
    assert (config.ansible_cfg, config.project_dir) == (None, None)
    assert (config.run_timeout_seconds, config.keep_runs) == (1800, 20)
    assert (config.max_connections, config.max_body_bytes) == (16, 1048576)

    unit = (site / "llmfleet-rollback-receiver.service").read_text().splitlines()
    assert unit[1] == "# Ansible managed"
    assert (
        f"ExecStart=/opt/llmfleet/venv/bin/llmfleet receiver --config {site}/receiver.yml" in unit
    )
    assert "User=llmfleet-receiver" in unit
    assert f"ReadWritePaths={site / 'state'}" in unit
    assert f"ReadWritePaths={site / 'log'}" in unit
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "KillMode=mixed"):
        assert line in unit
    assert "TimeoutStopSec=1830" in unit
