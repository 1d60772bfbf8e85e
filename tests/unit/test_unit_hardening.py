"""The units the project runs, sandboxed: each scores at most 2.0 in `systemd-analyze security`.

Debian's packaged units (fetched with `apt-get download` into a cache beside pytest's temporary
folders) with the roles' drop-ins, and the project's own units, rendered with Ansible's templar
as the roles render them, are scored offline (`systemd-analyze security --offline=true
--root=<tmp>`). The same units are scored where they run by
molecule/fleet/tests/test_fleet_hardening.py. Also: what each sandbox must leave open for its
service, and the shape of the roles' tasks that install the drop-ins.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.template import trust_as_template
from helpers import role_templar

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
UNIT_DIR = "etc/systemd/system"
MAX_EXPOSURE = 2.0
ANALYZE = shutil.which("systemd-analyze")

# The Debian 12 package of each packaged unit a role sandboxes with a drop-in.
PACKAGES = {
    "prometheus-node-exporter.service": "prometheus-node-exporter",
    "mtail.service": "mtail",
    "prometheus.service": "prometheus",
    "prometheus-alertmanager.service": "prometheus-alertmanager",
    "caddy.service": "caddy",
    "nginx.service": "nginx-common",
}


@dataclass(frozen=True)
class Case:
    """A unit as a host gets it: the packaged unit (if any) and the role's files for it."""

    unit: str
    role: str
    # Paths under roles/<role>/: templates/<target>.j2 or files/<unit>.
    sources: tuple[str, ...]
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def packaged(self) -> str | None:
        return self.unit if self.unit in PACKAGES else None


def dropin(unit: str, name: str = "llmfleet-hardening.conf") -> str:
    return f"templates/{UNIT_DIR}/{unit}.d/{name}.j2"


#: The cases by their id (the test ids).
CASES = {
    "node-exporter": Case("prometheus-node-exporter.service", "node_metrics",
        (dropin("prometheus-node-exporter.service"),)),
    "mtail": Case("mtail.service", "node_metrics",
        (dropin("mtail.service", "llmfleet.conf"), dropin("mtail.service"))),
    "mtail-on-all-addresses": Case("mtail.service", "node_metrics",
        (dropin("mtail.service", "llmfleet.conf"), dropin("mtail.service")),
        {"node_metrics_mtail_listen_address": "0.0.0.0"}),
    "gpu-metrics": Case("llmfleet-gpu-metrics.service", "node_metrics",
        ("files/llmfleet-gpu-metrics.service",)),
    "dcgm-exporter": Case("llmfleet-dcgm-exporter.service", "node_metrics",
        (f"templates/{UNIT_DIR}/llmfleet-dcgm-exporter.service.j2",)),
    "prometheus": Case("prometheus.service", "monitoring", (dropin("prometheus.service"),)),
    "alertmanager": Case("prometheus-alertmanager.service", "monitoring",
        (dropin("prometheus-alertmanager.service"),)),
    "rollback-receiver": Case("llmfleet-rollback-receiver.service", "rollback_receiver",
        (f"templates/{UNIT_DIR}/llmfleet-rollback-receiver.service.j2",)),
    "caddy": Case("caddy.service", "front_door", (dropin("caddy.service", "llmfleet.conf"),)),
    "nginx": Case("nginx.service", "offline_mirror", (dropin("nginx.service"),)),
    "nginx-tls": Case("nginx.service", "offline_mirror", (dropin("nginx.service"),),
        {"offline_mirror_tls_enabled": True}),
    "engine-cpu": Case("llmfleet-engine@blue.service", "inference_service",
        (f"templates/{UNIT_DIR}/llmfleet-engine@.service.j2",),
        {"__inference_service_on_gpu": False}),
    "engine-gpu": Case("llmfleet-engine@blue.service", "inference_service",
        (f"templates/{UNIT_DIR}/llmfleet-engine@.service.j2",),
        {"__inference_service_on_gpu": True}),
}  # fmt: skip


# --------------------------------------------------------------------------- rendering


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def role_variables(role: str, **changes: Any) -> dict[str, Any]:
    """The shared defaults, the role's defaults and vars, then the test's changes."""
    data: dict[str, Any] = {}
    for path in (
        ROLES / "llmfleet" / "defaults" / "main.yml",
        ROLES / role / "defaults" / "main.yml",
        ROLES / role / "vars" / "main.yml",
    ):
        data.update(load_yaml(path) or {})
    return {
        **data,
        "ansible_managed": "Ansible managed",
        "inventory_hostname": "test-host",
        **changes,
    }


def render(role: str, source: str, **changes: Any) -> str:
    text = (ROLES / role / source).read_text()
    if not source.startswith("templates/"):
        return text
    templar = role_templar(role_variables(role, **changes))
    return templar.template(trust_as_template(text))


def target(source: str) -> str:
    """Where a role writes the file: its path under templates/, or the unit folder for files/."""
    if source.startswith("templates/"):
        return source.removeprefix("templates/").removesuffix(".j2")
    return f"{UNIT_DIR}/{Path(source).name}"


def settings(text: str) -> dict[str, list[str]]:
    """A unit's settings in order, every value of each key (an empty one resets the list)."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def rendered(case_id: str) -> dict[str, list[str]]:
    """The settings the role's files for a case add, all files together."""
    case = CASES[case_id]
    return settings("\n".join(render(case.role, s, **case.variables) for s in case.sources))


# --------------------------------------------------------------------------- packaged units


@pytest.fixture(scope="session")
def packaged_unit(tmp_path_factory: pytest.TempPathFactory):
    """Debian's unit file by name, from its package, fetched once into a cache that outlives
    the session (beside pytest's numbered temporary folders); skips when it cannot be had."""
    cache = tmp_path_factory.getbasetemp().parent / "llmfleet-unit-debs"
    cache.mkdir(parents=True, exist_ok=True)

    def get(unit: str) -> Path:
        package = PACKAGES[unit]
        tree = cache / package
        for folder in ("lib/systemd/system", "usr/lib/systemd/system"):
            if (tree / folder / unit).is_file():
                return tree / folder / unit
        for tool in ("apt-get", "dpkg-deb"):
            if not shutil.which(tool):
                pytest.skip(f"{tool} is not installed: Debian's {unit} cannot be unpacked")
        debs = sorted(cache.glob(f"{package}_*.deb"))
        if not debs:
            try:
                done = subprocess.run(
                    ["apt-get", "download", package],
                    cwd=cache,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=300,
                )
            except subprocess.TimeoutExpired:
                pytest.skip(f"apt-get download {package} took over 300 s: no Debian {unit}")
            debs = sorted(cache.glob(f"{package}_*.deb"))
            if done.returncode != 0 or not debs:
                reason = (done.stderr.strip().splitlines() or ["no .deb"])[-1]
                pytest.skip(f"apt-get download {package} failed ({reason}): no Debian {unit}")
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tree)], check=True)
        for folder in ("lib/systemd/system", "usr/lib/systemd/system"):
            if (tree / folder / unit).is_file():
                return tree / folder / unit
        pytest.fail(f"{debs[-1].name} holds no {unit}")

    return get


# --------------------------------------------------------------------------- scoring


def exposure(root: Path, unit: str) -> float:
    """`systemd-analyze security --offline` of a unit under root; fails on a warning about
    the unit's files (an unknown key, a bad value: systemd ignores it and scores the rest)."""
    done = subprocess.run(
        [ANALYZE, "security", "--offline=true", f"--root={root}", "--no-pager", unit],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    warnings = [line for line in done.stderr.splitlines() if str(root) in line]
    assert not warnings, "\n".join(warnings)
    assert done.returncode == 0, done.stderr
    found = re.search(r"Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?)", done.stdout)
    assert found, done.stdout[-500:]
    return float(found.group(1))


def build_root(root: Path, case: Case, packaged: Path | None, with_role_files: bool = True) -> Path:
    if packaged is not None:
        (root / "lib/systemd/system").mkdir(parents=True)
        shutil.copy(packaged, root / "lib/systemd/system" / packaged.name)
    if with_role_files:
        for source in case.sources:
            path = root / target(source)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(case.role, source, **case.variables))
    return root


@pytest.mark.parametrize("case_id", CASES)
def test_unit_scores_at_most_2(case_id: str, tmp_path: Path, packaged_unit) -> None:
    if not ANALYZE:
        pytest.skip("systemd-analyze is not installed")
    case = CASES[case_id]
    packaged = packaged_unit(case.packaged) if case.packaged else None
    score = exposure(build_root(tmp_path / "with", case, packaged), case.unit)
    if packaged is None:
        assert score <= MAX_EXPOSURE, f"{case.unit}: {score}"
        return
    before = exposure(build_root(tmp_path / "packaged", case, packaged, False), case.unit)
    assert score <= MAX_EXPOSURE, f"{case.unit}: {before} as packaged, {score} with the drop-in"
    assert score < before


# --------------------------------------------------------------------------- what stays open

NVIDIA_DEVICES = {
    "/dev/nvidiactl rw",
    "/dev/nvidia-modeset rw",
    "/dev/nvidia-uvm rw",
    "/dev/nvidia-uvm-tools rw",
    "char-nvidia-frontend rw",  # /dev/nvidia[0-9]*, nvidiactl, nvidia-modeset
    "char-nvidia-uvm rw",  # nvidia-uvm, nvidia-uvm-tools
    "char-nvidia-caps r",  # /dev/nvidia-caps/nvidia-cap*: MIG
}


def test_the_gpu_engine_opens_every_nvidia_node_and_reads_the_driver_in_proc() -> None:
    unit = rendered("engine-gpu")
    assert set(unit["DeviceAllow"]) == NVIDIA_DEVICES
    assert unit["DevicePolicy"] == ["closed"]
    assert "PrivateDevices" not in unit, "it hides /dev/nvidia*"
    assert "ProcSubset" not in unit, "CUDA reads /proc/driver/nvidia"
    assert "MemoryDenyWriteExecute" not in unit, "CUDA's JIT writes code"
    assert unit["ProtectProc"] == ["invisible"]


def test_the_cpu_engine_has_no_devices_and_no_writable_code() -> None:
    unit = rendered("engine-cpu")
    assert unit["PrivateDevices"] == ["yes"]
    assert unit["MemoryDenyWriteExecute"] == ["yes"]
    assert unit["ProcSubset"] == ["pid"]
    assert "DeviceAllow" not in unit


@pytest.mark.parametrize("case_id", CASES)
def test_no_unit_hides_proc_inside_its_own_user_namespace(case_id: str) -> None:
    # systemd 252 cannot mount a hidepid /proc inside PrivateUsers= (seen in the fleet
    # scenario: "Failed to set up user namespacing", status=217/USER, on every start).
    unit = rendered(case_id)
    assert not ("ProtectProc" in unit and unit.get("PrivateUsers", ["no"])[-1] in ("yes", "true"))


@pytest.mark.parametrize("case_id", ["node-exporter", "mtail", "prometheus", "alertmanager"])
def test_exporters_keep_proc_whole(case_id: str) -> None:
    # client_golang's process_start_time_seconds reads /proc/stat (hidden by ProcSubset=pid).
    unit = rendered(case_id)
    assert "ProcSubset" not in unit
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["ProtectSystem"] == ["strict"]


def test_the_node_exporter_reads_every_process_and_mount_and_asks_systemd() -> None:
    unit = rendered("node-exporter")
    assert "ProtectProc" not in unit, "the processes collector and /proc/1/mounts"
    assert unit["ProtectHome"] == ["read-only"], "statfs() of a /home mount"
    assert set(unit["RestrictAddressFamilies"][0].split()) >= {"AF_UNIX", "AF_NETLINK"}
    assert "ReadWritePaths" not in unit
    assert "IPAddressDeny" not in unit, "Prometheus scrapes it from another host"


def test_mtail_reads_the_engine_log_and_closes_ip_only_on_loopback() -> None:
    unit = rendered("mtail")
    assert unit["SupplementaryGroups"] == ["llmfleet"]
    assert "PrivateUsers" not in unit, "the supplementary group must keep opening the log"
    assert unit["IPAddressDeny"] == ["any"]
    assert unit["IPAddressAllow"] == ["localhost"]
    assert "IPAddressDeny" not in rendered("mtail-on-all-addresses")


@pytest.mark.parametrize(("case_id", "writable"), [
    ("prometheus", "/var/lib/prometheus"),
    ("alertmanager", "/var/lib/prometheus/alertmanager"),
])  # fmt: skip
def test_monitoring_writes_only_its_data(case_id: str, writable: str) -> None:
    assert rendered(case_id)["ReadWritePaths"] == [writable]


def test_nginx_runs_as_www_data_with_only_the_low_port_capability() -> None:
    unit = rendered("nginx")
    assert unit["User"] == ["www-data"]
    assert unit["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert unit["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    # `nginx -t` opens nginx.conf's pid file too: it is made (as root) before.
    assert unit["ExecStartPre"][0] == ""
    assert unit["ExecStartPre"][1].startswith("+/usr/bin/install -o www-data")
    assert unit["ExecStartPre"][1].endswith(" /run/nginx.pid")
    assert unit["ExecStartPre"][-1].startswith("/usr/sbin/nginx -t")
    assert unit["ReadWritePaths"] == ["/var/log/nginx -/run/nginx.pid"]
    assert "BindReadOnlyPaths" not in unit


def test_nginx_with_tls_reads_a_copy_of_the_key_refreshed_before_a_reload() -> None:
    unit = rendered("nginx-tls")
    key = "/etc/nginx/tls/mirror.key"
    assert unit["BindReadOnlyPaths"] == [f"%t/nginx/mirror.key:{key}"]
    assert any(
        line.startswith("+/usr/bin/install") and key in line for line in unit["ExecStartPre"]
    )
    assert unit["ExecStartPre"][-1].startswith("/usr/sbin/nginx -t")
    assert unit["ExecReload"][0] == ""
    assert unit["ExecReload"][1].startswith("+/bin/sh -c 'cat ")
    assert unit["ExecReload"][-1].endswith(" -s reload")


def test_the_dcgm_exporter_client_reaches_only_the_docker_socket() -> None:
    unit = rendered("dcgm-exporter")
    assert unit["DynamicUser"] == ["yes"]
    assert unit["SupplementaryGroups"] == ["docker"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert unit["PrivateNetwork"] == ["yes"]


# --------------------------------------------------------------------------- the roles' tasks

HARDENED_ROLES = ["node_metrics", "monitoring", "offline_mirror"]


def handlers_listening(role: str, topic: str) -> list[dict[str, Any]]:
    found = []
    for handler in load_yaml(ROLES / role / "handlers" / "main.yml"):
        listen = handler.get("listen", [])
        if topic in ([listen] if isinstance(listen, str) else listen):
            found.append(handler)
    return found


@pytest.mark.parametrize("role", HARDENED_ROLES)
def test_each_dropin_is_installed_and_restarts_its_service(role: str) -> None:
    tasks = load_yaml(ROLES / role / "tasks" / "hardening.yml")
    templates = [t for t in tasks if "ansible.builtin.template" in t]
    assert templates
    for task in templates:
        module = task["ansible.builtin.template"]
        source = ROLES / role / "templates" / module["src"]
        assert module["dest"] == "/" + target("templates/" + module["src"])
        assert source.read_text().startswith("{{ ansible_managed | comment }}\n")
        assert (module["owner"], module["group"], module["mode"]) == ("root", "root", "0644")
        restarts = [
            h["ansible.builtin.systemd_service"]
            for h in handlers_listening(role, task["notify"])
            if h.get("ansible.builtin.systemd_service", {}).get("state") == "restarted"
        ]
        assert restarts, f"{role}: nothing restarts on {task['notify']!r}"
        assert all(h.get("daemon_reload") is True for h in restarts)
    (check,) = [t for t in tasks if "ansible.builtin.command" in t]
    assert check["ansible.builtin.command"]["argv"][:2] == ["systemd-analyze", "verify"]
    assert check["changed_when"] is False
    assert check["check_mode"] is False


@pytest.mark.parametrize("role", HARDENED_ROLES)
def test_main_imports_the_hardening_once_after_the_packages(role: str) -> None:
    imported = [
        t.get("ansible.builtin.import_tasks")
        for t in load_yaml(ROLES / role / "tasks" / "main.yml")
    ]
    assert imported.count("hardening.yml") == 1
    at = imported.index("hardening.yml")
    installs = {"node_metrics": ["node_exporter.yml", "mtail.yml"],
                "monitoring": ["prometheus.yml", "alertmanager.yml"],
                "offline_mirror": ["nginx.yml"]}[role]  # fmt: skip
    assert all(imported.index(name) < at for name in installs)
    if "health.yml" in imported:
        assert at < imported.index("health.yml")
