"""prometheus.yml and alertmanager.yml of the monitoring role, rendered by Ansible and checked.

The role's templates are rendered through ansible-playbook on localhost (no host is
connected to) for the example inventory, with the role's defaults and vars and the default
alert rules, then checked by the real tools: `promtool check config` (which also checks the
compiled rules file it names) and `amtool check-config`, both from Debian's packages
unpacked by scripts/debian-tool.sh (never installed).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "monitoring"
EXAMPLE = REPO / "inventories" / "example"
RULES_DEST = "/etc/prometheus/rules/*.rules.yml"
FLEET_JOBS = ("node", "mtail", "llmfleet-frontdoor", "llmfleet-engine")


def render(folder: Path, inventory: Path, extra: dict[str, Any] | None = None) -> Path:
    """Render the rules, prometheus.yml and alertmanager.yml into folder/out."""
    out = folder / "out"
    (out / "rules").mkdir(parents=True)
    template = "ansible.builtin.template"
    play = {
        "name": "Render the monitoring role's configuration",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [
            str(REPO / "roles" / "llmfleet" / "defaults" / "main.yml"),
            str(ROLE / "defaults" / "main.yml"),
            str(ROLE / "vars" / "main.yml"),
            str(REPO / "group_vars" / "all" / "alerts.yml"),
        ],
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {
                "name": "Rules",
                template: {
                    "src": str(ROLE / "templates/etc/prometheus/rules/llmfleet.rules.yml.j2"),
                    "dest": str(out / "rules" / "llmfleet.rules.yml"),
                    "mode": "0644",
                },
            },
            {
                "name": "Configurations",
                template: {
                    "src": str(ROLE / "templates/etc/prometheus/{{ item }}.j2"),
                    "dest": str(out / "{{ item }}"),
                    "mode": "0644",
                },
                "loop": ["prometheus.yml", "alertmanager.yml"],
            },
        ],
    }
    (folder / "render.yml").write_text(yaml.safe_dump([play], sort_keys=False))
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory)]
    # The receiver is off by default; these tests render its route and scrape job
    # unless a test says otherwise.
    extra = {"llmfleet_receiver_enabled": True, **(extra or {})}
    (folder / "extra.yml").write_text(yaml.safe_dump(extra))
    command += ["-e", f"@{folder / 'extra.yml'}"]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    result = subprocess.run(
        [*command, str(folder / "render.yml")], cwd=REPO, capture_output=True, text=True,
        check=False, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def check_prometheus(promtool: str, out: Path) -> dict[str, Any]:
    """promtool check config, with the rules path pointed at the rendered rules file."""
    text = (out / "prometheus.yml").read_text()
    assert text.startswith("#")  # the ansible_managed header
    config = yaml.safe_load(text)
    assert config["rule_files"] == [RULES_DEST]
    local = text.replace(RULES_DEST, str(out / "rules" / "*.rules.yml"))
    # promtool checks that the token and password files exist: stand-ins for the host's.
    for secret in sorted(set(re.findall(r"(?:credentials|password)_file: (\S+)", text))):
        stand_in = out / Path(secret).name
        stand_in.write_text("stand-in\n")
        local = local.replace(secret, str(stand_in))
    (out / "prometheus-local.yml").write_text(local)
    result = subprocess.run(
        [promtool, "check", "config", str(out / "prometheus-local.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout
    return config


def check_alertmanager(amtool: str, out: Path) -> dict[str, Any]:
    result = subprocess.run(
        [amtool, "check-config", str(out / "alertmanager.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    return yaml.safe_load((out / "alertmanager.yml").read_text())


def example_fleet() -> dict[str, str]:
    hosts = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())
    fleet = hosts["all"]["children"]["fleet"]["hosts"]
    return {name: (values or {}).get("ansible_host", name) for name, values in fleet.items()}


def targets(config: dict[str, Any], job: str) -> list[tuple[str, str]]:
    """(instance, address) of every target of a job."""
    (scrape,) = [entry for entry in config["scrape_configs"] if entry["job_name"] == job]
    return [
        (static["labels"]["instance"], target)
        for static in scrape["static_configs"]
        for target in static["targets"]
    ]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("example"), EXAMPLE)


def test_example_prometheus_config_passes_promtool(promtool: str, example: Path) -> None:
    check_prometheus(promtool, example)


def test_example_targets_are_one_per_fleet_host_and_job(promtool: str, example: Path) -> None:
    config = check_prometheus(promtool, example)
    fleet = example_fleet()
    assert len(fleet) == 3
    # mtail listens on loopback only: Prometheus reads it through the front door's metrics port.
    ports = {"node": 9100, "mtail": 9180, "llmfleet-frontdoor": 9180, "llmfleet-engine": 9180}
    for job in FLEET_JOBS:
        expected = sorted((name, f"{address}:{ports[job]}") for name, address in fleet.items())
        assert sorted(targets(config, job)) == expected, job
    jobs = {entry["job_name"]: entry for entry in config["scrape_configs"]}
    assert jobs["llmfleet-engine"]["metrics_path"] == "/engine/metrics"
    assert jobs["llmfleet-frontdoor"]["metrics_path"] == "/metrics"
    assert jobs["mtail"]["metrics_path"] == "/mtail/metrics"
    assert targets(config, "llmfleet-rollback-receiver") == [("localhost", "127.0.0.1:9095")]
    assert "node-dcgm-exporter" not in jobs
    assert config["global"]["scrape_interval"] == "15s"
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:9093"
    ]


def test_example_alertmanager_routes_rollbacks_to_the_receiver(amtool: str, example: Path) -> None:
    config = check_alertmanager(amtool, example)
    route = config["route"]
    assert route["receiver"] == "null"
    (rollback,) = route["routes"]
    assert rollback["matchers"] == ['action="rollback"']
    assert rollback["receiver"] == "llmfleet-rollback"
    assert rollback["group_by"] == ["alertname", "instance"]
    assert rollback["group_wait"] == "0s"
    assert rollback["continue"] is False
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert set(receivers) == {"null", "llmfleet-rollback"}
    (webhook,) = receivers["llmfleet-rollback"]["webhook_configs"]
    assert webhook["url"] == "http://127.0.0.1:9095/alertmanager"
    assert webhook["send_resolved"] is False
    assert webhook["http_config"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/etc/prometheus/llmfleet-receiver.token",
    }


def test_site_receivers_and_mail_relay_pass_amtool(amtool: str, tmp_path: Path) -> None:
    extra = {
        "monitoring_alertmanager_receivers": [
            {"name": "ops-webhook", "webhook_configs": [{"url": "http://chat.dc1.example/hook"}]},
            {"name": "ops-mail", "email_configs": [{"to": "ops@dc1.example"}]},
        ],
        "monitoring_alertmanager_routes": [
            {"matchers": ['severity="critical"'], "receiver": "ops-mail"}
        ],
        "monitoring_alertmanager_smtp": {
            "smarthost": "relay.dc1.example:25",
            "from": "llmfleet@dc1.example",
            "require_tls": False,
        },
    }
    config = check_alertmanager(amtool, render(tmp_path, EXAMPLE, extra))
    assert config["route"]["receiver"] == "ops-webhook"
    assert [route["receiver"] for route in config["route"]["routes"]] == [
        "llmfleet-rollback",
        "ops-mail",
    ]
    assert config["global"]["smtp_smarthost"] == "relay.dc1.example:25"
    assert config["global"]["smtp_from"] == "llmfleet@dc1.example"
    assert {receiver["name"] for receiver in config["receivers"]} == {
        "ops-webhook",
        "ops-mail",
        "llmfleet-rollback",
    }


def test_without_the_receiver_rollback_alerts_are_plain_alerts(
    promtool: str, amtool: str, tmp_path: Path
) -> None:
    out = render(tmp_path, EXAMPLE, {"llmfleet_receiver_enabled": False})
    config = check_alertmanager(amtool, out)
    assert config["route"]["routes"] == []
    assert [receiver["name"] for receiver in config["receivers"]] == ["null"]
    jobs = {entry["job_name"] for entry in check_prometheus(promtool, out)["scrape_configs"]}
    assert "llmfleet-rollback-receiver" not in jobs


def test_host_ports_and_the_dcgm_exporter_come_from_the_inventory(
    promtool: str, tmp_path: Path
) -> None:
    inventory = {
        "all": {
            "children": {
                "fleet": {
                    "hosts": {
                        "gpu-dcgm": {
                            "ansible_host": "10.0.0.5",
                            "node_metrics_gpu_collector": "dcgm_exporter",
                            "llmfleet_node_exporter_port": 19100,
                        },
                        "gpu-v6": {"ansible_host": "fd00::7"},
                        "cpu-plain": None,
                    }
                }
            }
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    config = check_prometheus(promtool, render(tmp_path, tmp_path / "hosts.yml"))
    assert sorted(targets(config, "node")) == [
        ("cpu-plain", "cpu-plain:9100"),
        ("gpu-dcgm", "10.0.0.5:19100"),
        ("gpu-v6", "[fd00::7]:9100"),
    ]
    # The DCGM exporter listens on loopback only: read through the front door's metrics port.
    assert targets(config, "node-dcgm-exporter") == [("gpu-dcgm", "10.0.0.5:9180")]
    (dcgm,) = [e for e in config["scrape_configs"] if e["job_name"] == "node-dcgm-exporter"]
    assert dcgm["metrics_path"] == "/dcgm/metrics"
    assert {"target_label": "job", "replacement": "node"} in dcgm["relabel_configs"]


def test_every_scrape_and_alertmanager_ask_for_credentials(promtool: str, tmp_path: Path) -> None:
    extra = {"llmfleet_metrics_password": "a-test-password", "llmfleet_metrics_user": "scraper"}
    config = check_prometheus(promtool, render(tmp_path, EXAMPLE, extra))
    auth = {"username": "scraper", "password_file": "/etc/prometheus/llmfleet-metrics.password"}
    jobs = {entry["job_name"]: entry for entry in config["scrape_configs"]}
    for name, job in jobs.items():
        if name == "llmfleet-rollback-receiver":
            assert job["authorization"] == {
                "credentials_file": "/etc/prometheus/llmfleet-receiver.token"
            }
        else:
            assert job["basic_auth"] == auth, name
    assert config["alerting"]["alertmanagers"][0]["basic_auth"] == auth
    text = (tmp_path / "out" / "prometheus.yml").read_text()
    assert "a-test-password" not in text
