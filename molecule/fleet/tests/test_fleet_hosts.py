"""The state the converge leaves on each fleet host: packages from the mirror, the engine's
colors behind the front door, the metrics exporters, the files and their modes, and the
one local fact that says what each color runs.

Run by verify.yml (molecule/resources/testinfra.yml) before the day-two steps change anything.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

testinfra_hosts = ["ansible://fleet"]

API_KEY = "llmfleet-test-key"
MIRROR_PACKAGES = ["caddy", "prometheus-node-exporter", "mtail", "libgomp1", "openssh-server"]


def fact(host) -> dict:
    return json.loads(host.file("/etc/ansible/facts.d/blue_green.fact").content_string)


@pytest.mark.parametrize("name", MIRROR_PACKAGES)
def test_package_is_installed_from_the_mirror(host, name: str) -> None:
    assert host.package(name).is_installed
    policy = host.check_output(f"apt-cache policy {name}")
    assert "http://fl-mirror/apt/debian12" in policy


def test_the_mirror_is_the_only_apt_source(host) -> None:
    sources = host.check_output(
        "find /etc/apt /etc/apt/sources.list.d -maxdepth 1 -type f "
        r"\( -name sources.list -o -name '*.list' -o -name '*.sources' \) | sort"
    ).split()
    assert sources == ["/etc/apt/sources.list.d/llmfleet-bundle.sources"]
    assert host.file("/etc/apt/sources.disabled-by-llmfleet").is_directory


def test_no_route_leaves_the_internal_network(host) -> None:
    assert host.check_output("ip route show default") == ""
    route = host.run("ip route get 192.0.2.1")
    assert route.rc != 0 and "unreachable" in route.stderr


def test_blue_serves_and_green_waits(host) -> None:
    blue, green = host.service("llmfleet-engine@blue"), host.service("llmfleet-engine@green")
    assert blue.is_running and blue.is_enabled
    assert not green.is_running and not green.is_enabled
    assert host.service("caddy").is_running and host.service("caddy").is_enabled


def test_the_engine_runs_as_the_unprivileged_user(host) -> None:
    pid = host.check_output("systemctl show -p MainPID --value llmfleet-engine@blue")
    assert host.file(f"/proc/{pid}").user == "llmfleet"
    assert host.user("llmfleet").shell == "/usr/sbin/nologin"


def test_ports_listen_where_they_should(host) -> None:
    assert host.socket("tcp://0.0.0.0:8080").is_listening  # the front door
    assert host.socket("tcp://0.0.0.0:9180").is_listening  # its metrics
    assert host.socket("tcp://127.0.0.1:8081").is_listening  # blue, loopback only
    assert not host.socket("tcp://0.0.0.0:8081").is_listening
    assert not host.socket("tcp://127.0.0.1:8082").is_listening  # green is stopped
    assert host.socket("tcp://9100").is_listening  # node exporter
    # mtail answers on loopback only; Caddy's :9180 proxies it behind the metrics password
    assert host.socket("tcp://127.0.0.1:3903").is_listening
    assert not host.socket("tcp://0.0.0.0:3903").is_listening


@pytest.mark.parametrize("name", ["config.yaml", "api-key", "engine-blue.env", "config-blue.yaml"])
def test_secret_files_are_not_world_readable(host, name: str) -> None:
    secret = host.file(f"/etc/llmfleet/{name}")
    assert (secret.user, secret.group, secret.mode) == ("root", "llmfleet", 0o640)


@pytest.mark.parametrize(
    ("path", "user", "group", "mode"),
    [
        ("/etc/llmfleet", "root", "llmfleet", 0o750),
        ("/var/log/llmfleet", "root", "llmfleet", 0o750),
        ("/var/log/llmfleet/engine.log", "root", "llmfleet", 0o640),
        ("/etc/caddy/llmfleet.env", "root", "caddy", 0o640),
        ("/etc/caddy/Caddyfile", "root", "caddy", 0o640),
        ("/etc/systemd/system/llmfleet-engine@.service", "root", "root", 0o644),
        # What fetch verified: root's alone (the service user could otherwise vouch for a file)
        ("/var/lib/llmfleet-verified", "root", "root", 0o755),
    ],
)
def test_file_owner_and_mode(host, path: str, user: str, group: str, mode: int) -> None:
    f = host.file(path)
    assert f.exists
    assert (f.user, f.group, f.mode) == (user, group, mode)


def test_the_api_key_is_in_no_world_readable_file_or_command_line(host) -> None:
    assert API_KEY not in host.check_output("ps -eo args")
    assert API_KEY not in host.file("/etc/systemd/system/llmfleet-engine@.service").content_string
    assert API_KEY not in host.file("/etc/caddy/Caddyfile").content_string


def test_one_fact_records_what_each_color_runs(host) -> None:
    colors = fact(host)
    assert colors["active"] == "blue"
    assert colors["previous"] == ""
    blue = colors["colors"]["blue"]
    assert blue["port"] == 8081
    assert blue["model"]["name"] == "SmolLM2-135M-Instruct"
    assert blue["model"]["path"].endswith("/SmolLM2-135M-Instruct.Q4_1.gguf")
    # The link the unit runs is the build the fact names.
    link = host.file("/opt/llmfleet/engine/blue").linked_to
    assert link == f"/opt/llmfleet/engine/{blue['build']}"


def test_nothing_else_restates_what_runs(host) -> None:
    assert not host.file("/opt/llmfleet/engine/current").exists
    assert not host.file("/etc/ansible/facts.d/llmfleet_engine.fact").exists
    assert not host.file("/etc/ansible/facts.d/llmfleet_service.fact").exists


def test_the_first_host_built_the_engine_and_the_second_installed_it(host) -> None:
    build = fact(host)["colors"]["blue"]["build"]
    info = json.loads(host.file(f"/opt/llmfleet/engine/{build}/BUILD_INFO.json").content_string)
    assert info["variant"] == "cpu"
    assert info["build_id"] == build
    name = host.backend.get_hostname()
    assert info["installed_from"] == ("build" if name == "fl-cpu" else "mirror")


def test_config_yaml_describes_the_running_server(host) -> None:
    data = yaml.safe_load(host.file("/etc/llmfleet/config.yaml").content_string)
    mem_mib = int(host.check_output("awk '/^MemTotal:/ {print $2}' /proc/meminfo")) // 1024
    assert data["model"]["name"] == "SmolLM2-135M-Instruct"
    assert data["context_length"] == 2048
    assert data["api_key"] == API_KEY
    assert data["color"] == "blue"
    assert data["tensor_parallel_degree"] == 1
    if host.backend.get_hostname() == "fl-gpu":  # the simulated RTX 3060's facts
        assert data["device_map"] == ["cuda:0"]
        assert data["max_memory"] == {"cuda:0": "11264MiB"}
        assert data["n_gpu_layers"] == 999
    else:
        assert data["device_map"] == ["cpu"]
        assert data["max_memory"] == {"cpu": f"{mem_mib - 1024}MiB"}
        assert data["n_gpu_layers"] == 0
    assert (
        host.file("/etc/llmfleet/config.yaml").content_string
        == host.file("/etc/llmfleet/config-blue.yaml").content_string
    )


def test_metrics_exporters_run(host) -> None:
    assert host.service("prometheus-node-exporter").is_running
    assert host.service("mtail").is_running
    timer = host.file("/etc/systemd/system/llmfleet-gpu-metrics.timer")
    if host.backend.get_hostname() == "fl-gpu":
        assert timer.exists and host.service("llmfleet-gpu-metrics.timer").is_running
    else:
        assert not timer.exists


def test_the_engine_unit_is_hardened(host) -> None:
    report = host.check_output("systemd-analyze security --no-pager llmfleet-engine@blue.service")
    last = report.splitlines()[-1]
    score = float(re.search(r"exposure level for \S+: ([0-9.]+)", last).group(1))
    print(f"{host.backend.get_hostname()}: {last}")
    assert score <= 2.0
