"""The state the converge leaves on the monitoring host: Prometheus, Alertmanager and the
rollback receiver, each on its address, the receiver unprivileged with its secrets closed."""

from __future__ import annotations

import pytest

testinfra_hosts = ["ansible://monitoring"]


UNITS = ["prometheus", "prometheus-alertmanager", "llmfleet-rollback-receiver"]


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_enabled_and_running(host, unit: str) -> None:
    assert host.service(unit).is_running
    assert host.service(unit).is_enabled


def test_ports_listen_where_they_should(host) -> None:
    assert host.socket("tcp://0.0.0.0:9090").is_listening
    assert host.socket("tcp://127.0.0.1:9093").is_listening
    assert host.socket("tcp://127.0.0.1:9095").is_listening
    assert not host.socket("tcp://0.0.0.0:9095").is_listening


def test_the_receiver_runs_unprivileged(host) -> None:
    pid = host.check_output("systemctl show -p MainPID --value llmfleet-rollback-receiver")
    assert host.file(f"/proc/{pid}").user == "llmfleet-receiver"


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("/etc/llmfleet-receiver/receiver.token", "llmfleet-receiver"),
        ("/etc/llmfleet-receiver/receiver.yml", "llmfleet-receiver"),
        ("/etc/prometheus/llmfleet-receiver.token", "prometheus"),
    ],
)
def test_secret_files_are_closed(host, path: str, group: str) -> None:
    secret = host.file(path)
    assert (secret.user, secret.group, secret.mode) == ("root", group, 0o640)


def test_the_rollbacks_run_from_a_complete_copy_of_the_project(host) -> None:
    project = host.file("/opt/llmfleet/project")
    assert project.is_symlink
    assert host.file(f"{project.linked_to}/.complete").exists
    assert host.file("/opt/llmfleet/project/playbooks/rollback.yml").exists
    assert host.file("/opt/llmfleet/project/inventory/hosts.yml").exists
