"""The rollback receiver: decisions, authentication, cool-down state, metrics, HTTP interface.

The HTTP tests start the real server on 127.0.0.1 (an ephemeral port) with an injected run
function in place of ansible-runner; tests/integration/test_rollback_receiver_runner.py runs
the real playbook.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ServedReceiver, prometheus_samples, receiver_on_loopback
from prometheus_client.parser import text_string_to_metric_families

from llmfleet import rollback_receiver as rr
from llmfleet.cli import main

TOKEN = "s3cret-token-0123456789"
NOW = 1_750_000_000.0
#: The inventory the unit tests' receivers check hosts against (no ansible-inventory run).
INVENTORY = rr.Inventory(
    hosts=frozenset(f"gpu{number:02d}" for number in range(1, 10)),
    groups=frozenset({"all", "ungrouped", "gpus"}),
)


def inventory() -> rr.Inventory:
    return INVENTORY


def alert(
    instance: str = "gpu01:9100",
    action: str = "rollback",
    status: str = "firing",
    name: str = "EngineErrorRate",
    fingerprint: str = "a1b2c3",
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "alertname": name,
            "instance": instance,
            "action": action,
            "metric": "llamacpp:requests_failed_ratio",
            "severity": "critical",
            **labels,
        },
        "annotations": {"summary": f"{name} on {instance}"},
        "startsAt": "2026-05-01T10:00:00.000Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://monitor:9090/graph",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}/{action="rollback"}:{alertname="EngineErrorRate"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "llmfleet-rollback",
        "groupLabels": {"alertname": "EngineErrorRate"},
        "commonLabels": {"action": "rollback"},
        "commonAnnotations": {},
        "externalURL": "http://monitor:9093",
        "alerts": list(alerts),
    }


def make_config(tmp_path: Path, **overrides: Any) -> rr.ReceiverConfig:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    values: dict[str, Any] = {
        "token_file": token_file,
        "playbook": tmp_path / "rollback.yml",
        "inventory": tmp_path / "hosts.yml",
        "state_dir": tmp_path / "state",
        "log_file": tmp_path / "log" / "actions.jsonl",
        "port": 0,
    }
    values.update(overrides)
    return rr.ReceiverConfig(**values)


def log_records(config: rr.ReceiverConfig) -> list[dict[str, Any]]:
    return [json.loads(line) for line in config.log_file.read_text().splitlines()]


# -- instance labels and decisions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("instance", "host"),
    [
        ("gpu01:9100", "gpu01"),
        ("gpu01", "gpu01"),
        ("gpu01.dc1.example:8080", "gpu01.dc1.example"),
        ("10.0.0.5:9100", "10.0.0.5"),
        ("  gpu_02  ", "gpu_02"),
        ("all", None),
        ("ungrouped:9100", None),
        ("gpu*", None),
        ("gpu01,gpu02", None),
        ("!gpu01", None),
        ("gpu0[1:2]", None),
        ("&gpus", None),
        ("~gpu.*", None),
        ("-gpu01", None),
        ("gpu01:notaport", None),
        ("[::1]:9100", None),
        ("", None),
    ],
)
def test_host_of_instance_accepts_only_literal_host_names(instance: str, host: str | None) -> None:
    assert rr.host_of_instance(instance) == host


def test_decide_takes_one_decision_per_alert() -> None:
    alerts = rr.parse_payload(
        payload(
            alert("gpu01:9100", fingerprint="f1"),
            alert("gpu02:9100", status="resolved", fingerprint="f2"),
            alert("gpu03:9100", action="notify", fingerprint="f3"),
            alert("gpu*", fingerprint="f4"),
            alert("gpu01:9400", name="EngineDown", fingerprint="f5"),
            alert("gpu05", fingerprint="f6"),
            alert("gpu06", fingerprint="f7"),
        )
    )
    last = {"gpu05": NOW - 100, "gpu06": NOW - 901}
    decisions = rr.decide(alerts, last, NOW, 900)
    assert [(d.decision, d.host, d.alert.fingerprint) for d in decisions] == [
        ("started", "gpu01", "f1"),
        ("ignored_resolved", "gpu02", "f2"),
        ("ignored_not_rollback", "gpu03", "f3"),
        ("ignored_bad_instance", None, "f4"),
        ("skipped_cooldown", "gpu01", "f5"),
        ("skipped_cooldown", "gpu05", "f6"),
        ("started", "gpu06", "f7"),
    ]
    assert decisions[5].reason == "last rollback 100 s ago, cool-down 900 s"
    assert decisions[4].reason == "last rollback 0 s ago, cool-down 900 s"
    assert last == {"gpu05": NOW - 100, "gpu06": NOW - 901}, "decide must not change its input"


def test_a_label_without_action_is_not_a_rollback() -> None:
    alerts = rr.parse_payload(payload({"status": "firing", "labels": {"instance": "gpu01"}}))
    [decision] = rr.decide(alerts, {}, NOW, 900)
    assert decision.decision == "ignored_not_rollback"


def test_cooldown_zero_allows_every_alert() -> None:
    alerts = rr.parse_payload(payload(alert("gpu01"), alert("gpu01")))
    decisions = rr.decide(alerts, {"gpu01": NOW}, NOW, 0)
    assert [d.decision for d in decisions] == ["started", "started"]


def test_apply_decisions_and_prune_state() -> None:
    alerts = rr.parse_payload(payload(alert("gpu01"), alert("gpu02", status="resolved")))
    decisions = rr.decide(alerts, {}, NOW, 900)
    state = rr.apply_decisions({"old": NOW - 5000, "recent": NOW - 10}, decisions, NOW)
    assert state == {"old": NOW - 5000, "recent": NOW - 10, "gpu01": NOW}
    assert rr.prune_state(state, NOW, 900) == {"recent": NOW - 10, "gpu01": NOW}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be a JSON object"),
        ({"version": "3", "alerts": []}, "version '3' is not supported"),
        ({"version": "4"}, "no list 'alerts'"),
        ({"version": "4", "alerts": ["x"]}, r"alerts\[0\] must be an object"),
        ({"version": "4", "alerts": [{"labels": ["a"]}]}, r"alerts\[0\].labels must be"),
    ],
)
def test_parse_payload_rejects_what_is_not_a_webhook_payload(
    document: object, message: str
) -> None:
    with pytest.raises(rr.PayloadError, match=message):
        rr.parse_payload(document)


def test_parse_payload_reads_alert_fields() -> None:
    [parsed] = rr.parse_payload(payload(alert("gpu01:9100", fingerprint="ff00", rule="errors")))
    assert parsed.name == "EngineErrorRate"
    assert parsed.starts_at == "2026-05-01T10:00:00.000Z"
    fields = parsed.log_fields()
    assert fields["metric"] == "llamacpp:requests_failed_ratio"
    assert fields["fingerprint"] == "ff00"
    assert fields["instance"] == "gpu01:9100"
    assert fields["severity"] == "critical"
    assert fields["rule"] == "errors"


# -- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        ("Bearer ", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("", False),
        (None, False),
    ],
)
def test_is_authorized(header: str | None, allowed: bool) -> None:
    assert rr.is_authorized(header, TOKEN) is allowed


def test_is_authorized_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = rr.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(rr.hmac, "compare_digest", spy)
    assert rr.is_authorized(f"Bearer {TOKEN}", TOKEN)
    assert calls == [(TOKEN.encode(), TOKEN.encode())]


def test_an_empty_token_authorizes_nothing() -> None:
    assert not rr.is_authorized("Bearer ", "")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (f"  {TOKEN}\n", None),
        ("\n", "the token file {path} is empty"),
        ("two words\n", "the token in {path} holds white space: it must be one word"),
        (None, "cannot read the token file {path}: No such file or directory"),
    ],
)
def test_read_token(tmp_path: Path, content: str | None, problem: str | None) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    if problem is None:
        assert rr.read_token(path) == TOKEN
        return
    with pytest.raises(ValueError) as caught:
        rr.read_token(path)
    assert str(caught.value) == problem.format(path=path)


# -- configuration ---------------------------------------------------------------------------


def test_parse_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = rr.parse_config(
        {"token_file": "token", "playbook": "pb/rollback.yml", "inventory": "/srv/inv"}, tmp_path
    )
    assert config.address == "127.0.0.1"
    assert config.port == 9095
    assert config.cooldown_seconds == 900
    assert config.state_dir == Path("/var/lib/llmfleet-receiver")
    assert config.log_file == Path("/var/log/llmfleet-receiver/actions.jsonl")
    assert config.token_file == tmp_path / "token"
    assert config.playbook == tmp_path / "pb" / "rollback.yml"
    assert config.inventory == Path("/srv/inv")
    assert config.run_timeout_seconds == 1800
    assert config.keep_runs == 50
    assert config.extravars == {}
    assert config.run_dir == tmp_path / "pb", "without ansible_cfg: the playbook's folder"


def test_parse_config_full(tmp_path: Path) -> None:
    config = rr.parse_config(
        {
            "listen": {"address": "0.0.0.0", "port": 19095},
            "token_file": "/etc/llmfleet/receiver.token",
            "cooldown_seconds": 60,
            "state_dir": "/srv/state",
            "log_file": "/srv/log/a.jsonl",
            "playbook": "/opt/llmfleet/playbooks/rollback.yml",
            "inventory": "/opt/llmfleet/inventories/site",
            "ansible_cfg": "/opt/llmfleet/ansible.cfg",
            "extravars": {"rollback_reason": "alert"},
            "environment": {"ANSIBLE_FORKS": "1"},
            "run_timeout_seconds": 600,
            "keep_runs": 5,
        },
        tmp_path,
    )
    assert (config.address, config.port, config.cooldown_seconds) == ("0.0.0.0", 19095, 60.0)
    assert config.run_dir == Path("/opt/llmfleet"), "with ansible_cfg: its folder"
    assert config.extravars == {"rollback_reason": "alert"}
    assert config.environment == {"ANSIBLE_FORKS": "1"}
    assert (config.run_timeout_seconds, config.keep_runs) == (600, 5)


def test_parse_config_reports_every_problem(tmp_path: Path) -> None:
    with pytest.raises(rr.ConfigError) as caught:
        rr.parse_config(
            {
                "listen": {"port": 70000, "host": "x"},
                "token_file": "",
                "cooldown_seconds": -1,
                "inventroy": "typo",
                "environment": {"ANSIBLE_FORKS": 1, "BAD NAME": "x"},
                "extravars": ["a"],
                "run_timeout_seconds": 0,
                "keep_runs": True,
            },
            tmp_path,
        )
    problems = caught.value.problems
    assert problems == [
        "unknown key 'inventroy' (known: ansible_cfg, cooldown_seconds, environment, extravars, "
        "inventory, inventory_cache_seconds, keep_runs, limits, listen, log_file, "
        "metrics_token_file, playbook, project_dir, run_timeout_seconds, state_dir, token_file)",
        "unknown key listen.host (known: address, port)",
        "listen.port must be an integer from 1 to 65535, not 70000",
        "cooldown_seconds must be a number of seconds >= 0, not -1",
        "run_timeout_seconds must be an integer >= 1, not 0",
        "keep_runs must be an integer >= 1, not True",
        "extravars must be a mapping with string keys",
        "environment.ANSIBLE_FORKS must be a string (quote it), not 1",
        "environment: 'BAD NAME' is not a variable name",
        "token_file must be a non-empty path, not ''",
        "playbook is required (a path)",
        "inventory is required (a path)",
    ]


def test_parse_config_needs_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(rr.ConfigError, match="must be a mapping"):
        rr.parse_config(["token_file"], tmp_path)


def write_config(tmp_path: Path, **extra: Any) -> Path:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "rollback.yml").write_text("---\n[]\n")
    (tmp_path / "hosts.yml").write_text("---\nall: {}\n")
    document = {
        "token_file": "token",
        "playbook": "rollback.yml",
        "inventory": "hosts.yml",
        "state_dir": "state",
        "log_file": "log/actions.jsonl",
        **extra,
    }
    path = tmp_path / "receiver.yml"
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


def test_load_config_checks_the_files(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    config = rr.load_config(path)
    assert config.playbook == tmp_path / "rollback.yml"
    (tmp_path / "rollback.yml").unlink()
    (tmp_path / "token").write_text("")
    with pytest.raises(rr.ConfigError) as caught:
        rr.load_config(path)
    assert caught.value.problems == [
        f"playbook {tmp_path / 'rollback.yml'} is not a file",
        f"the token file {tmp_path / 'token'} is empty",
    ]


def test_load_config_names_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(rr.ConfigError, match="cannot read it"):
        rr.load_config(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("listen: [\n")
    with pytest.raises(rr.ConfigError, match="not valid YAML"):
        rr.load_config(bad)


def test_cli_reports_config_problems_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, cooldown_seconds="soon")
    assert main(["receiver", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is not valid (1 problems)" in err
    assert "cooldown_seconds must be a number of seconds >= 0, not 'soon'" in err
    path = write_config(tmp_path, cooldown_seconds=60)
    assert main(["receiver", "--config", str(path), "--check"]) == 0
    assert "valid; would listen on 127.0.0.1:9095" in capsys.readouterr().out


# -- cool-down state on disk -----------------------------------------------------------------


def test_state_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cooldown.json"
    assert rr.load_state(path) == {}
    rr.save_state(path, {"gpu02": NOW, "gpu01": NOW - 5})
    assert rr.load_state(path) == {"gpu01": NOW - 5, "gpu02": NOW}
    assert json.loads(path.read_text())["version"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["cooldown.json"], "no temporary left"


def test_a_corrupt_state_file_is_an_error_not_a_forgotten_cooldown(tmp_path: Path) -> None:
    path = tmp_path / "cooldown.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the cool-down state"):
        rr.load_state(path)
    path.write_text('{"hosts": {}}')
    with pytest.raises(ValueError, match="not a cool-down state file"):
        rr.load_state(path)


class Recorder:
    """An injected run function: records requests, may block, tracks concurrency."""

    def __init__(self, outcome: rr.RunOutcome | None = None, block: bool = False) -> None:
        self.requests: list[rr.RollbackRequest] = []
        self.outcome = outcome or rr.RunOutcome("successful", 0, 0.25, "/runs/x")
        self.release = threading.Event()
        self.entered = threading.Event()
        if not block:
            self.release.set()
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def __call__(self, request: rr.RollbackRequest) -> rr.RunOutcome:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.requests.append(request)
        self.entered.set()
        assert self.release.wait(10), "the test never released the run"
        time.sleep(0.01)
        with self._lock:
            self.running -= 1
        return self.outcome


def test_cooldown_survives_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path, cooldown_seconds=900)
    clock = [NOW]
    first = rr.Receiver(config, TOKEN, Recorder(), clock=lambda: clock[0], inventory=inventory)
    assert [d.decision for d in first.handle_payload(payload(alert("gpu01")))] == ["started"]
    assert first.wait_idle(5)
    first.stop(5)

    clock[0] = NOW + 600
    second = rr.Receiver(
        config, TOKEN, recorder := Recorder(), clock=lambda: clock[0], inventory=inventory
    )
    decisions = second.handle_payload(payload(alert("gpu01:9100")))
    assert [d.decision for d in decisions] == ["skipped_cooldown"]
    clock[0] = NOW + 901
    assert [d.decision for d in second.handle_payload(payload(alert("gpu01")))] == ["started"]
    assert second.wait_idle(5)
    second.stop(5)
    assert [r.host for r in recorder.requests] == ["gpu01"]
    assert rr.load_state(config.state_dir / "cooldown.json") == {"gpu01": NOW + 901}


def test_stop_drops_queued_rollbacks_and_clears_their_cooldown(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    recorder = Recorder(block=True)
    receiver = rr.Receiver(config, TOKEN, recorder, clock=lambda: NOW, inventory=inventory)
    receiver.handle_payload(payload(alert("gpu01"), alert("gpu02")))
    assert recorder.entered.wait(5)
    stopper = threading.Thread(target=receiver.stop, args=(10,))
    stopper.start()
    deadline = time.monotonic() + 5
    while not any(r["event"] == "dropped" for r in log_records(config)):
        assert time.monotonic() < deadline, "stop() did not drop the queued rollback"
        time.sleep(0.01)
    recorder.release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert [r.host for r in recorder.requests] == ["gpu01"], "the running rollback finished"
    assert rr.load_state(config.state_dir / "cooldown.json") == {"gpu01": NOW}
    events = [(r["event"], r["host"]) for r in log_records(config)]
    assert ("dropped", "gpu02") in events
    assert events[-1] == ("finished", "gpu01")


def test_a_failing_run_function_is_counted_and_the_worker_goes_on(tmp_path: Path) -> None:
    config = make_config(tmp_path, cooldown_seconds=0)
    calls: list[str] = []

    def explode(request: rr.RollbackRequest) -> rr.RunOutcome:
        calls.append(request.host)
        raise RuntimeError("no runner")

    receiver = rr.Receiver(config, TOKEN, explode, clock=lambda: NOW, inventory=inventory)
    receiver.handle_payload(payload(alert("gpu01"), alert("gpu02")))
    assert receiver.wait_idle(5)
    receiver.stop(5)
    assert calls == ["gpu01", "gpu02"]
    finished = [r for r in log_records(config) if r["event"] == "finished"]
    assert [(r["host"], r["result"], r["runner_status"]) for r in finished] == [
        ("gpu01", "failed", "error"),
        ("gpu02", "failed", "error"),
    ]
    assert finished[0]["detail"] == "RuntimeError: no runner"


# -- metrics and the ansible side ------------------------------------------------------------


def test_format_metrics() -> None:
    """prometheus_client's text format: the same names, labels and escaping, values as floats."""
    text = rr.format_metrics(
        {("gpu02", "failed"): 1, ("gpu01", "successful"): 2, ('we"ird\\', "failed"): 1},
        {"started": 3, "skipped_cooldown": 4},
    )
    assert text == (
        "# HELP llmfleet_rollbacks_total Rollback runs finished, by host and result.\n"
        "# TYPE llmfleet_rollbacks_total counter\n"
        'llmfleet_rollbacks_total{host="gpu01",result="successful"} 2.0\n'
        'llmfleet_rollbacks_total{host="gpu02",result="failed"} 1.0\n'
        'llmfleet_rollbacks_total{host="we\\"ird\\\\",result="failed"} 1.0\n'
        "# HELP llmfleet_rollback_alerts_total Alerts received, by the receiver's decision.\n"
        "# TYPE llmfleet_rollback_alerts_total counter\n"
        'llmfleet_rollback_alerts_total{decision="ignored_bad_instance"} 0.0\n'
        'llmfleet_rollback_alerts_total{decision="ignored_not_rollback"} 0.0\n'
        'llmfleet_rollback_alerts_total{decision="ignored_resolved"} 0.0\n'
        'llmfleet_rollback_alerts_total{decision="skipped_cooldown"} 4.0\n'
        'llmfleet_rollback_alerts_total{decision="started"} 3.0\n'
    )


def test_metrics_parse_back_and_each_receiver_counts_alone() -> None:
    """What a scrape reads: two counters, no _created series, no state shared by instances."""
    first, second = rr.RollbackMetrics(), rr.RollbackMetrics()
    first.count_alert("started")
    first.count_rollback("gpu01", "failed")
    first.count_rollback("gpu01", "failed")
    families = {f.name: f for f in text_string_to_metric_families(first.exposition())}
    assert {name: f.type for name, f in families.items()} == {
        "llmfleet_rollbacks": "counter",
        "llmfleet_rollback_alerts": "counter",
        "llmfleet_rollback_requests_refused": "counter",
    }
    [run] = families["llmfleet_rollbacks"].samples
    assert (run.name, run.labels, run.value) == (
        "llmfleet_rollbacks_total",
        {"host": "gpu01", "result": "failed"},
        2.0,
    )
    decided = {s.labels["decision"]: s.value for s in families["llmfleet_rollback_alerts"].samples}
    assert decided == {decision: float(decision == "started") for decision in rr.DECISIONS}
    assert "_created" not in first.exposition()
    assert "gpu01" not in second.exposition()
    assert first.registry is not second.registry


def test_run_outcome_result() -> None:
    assert rr.RunOutcome("successful", 0, 1.0).result == "successful"
    for status in ("failed", "timeout", "canceled", "rejected", "error"):
        assert rr.RunOutcome(status, 1, 1.0).result == "failed"


def test_inventory_names() -> None:
    listing = {
        "_meta": {"hostvars": {"gpu01": {"ansible_host": "10.0.0.1"}}},
        "all": {"children": ["ungrouped", "gpu"]},
        "gpu": {"hosts": ["gpu01", "gpu02"]},
        "ungrouped": {"hosts": ["monitor"]},
    }
    hosts, groups = rr.inventory_names(listing)
    assert hosts == {"gpu01", "gpu02", "monitor"}
    assert groups == {"all", "gpu", "ungrouped"}


def test_ansible_environment(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, ansible_cfg=Path("/opt/llmfleet/ansible.cfg"), environment={"ANSIBLE_FORKS": "2"}
    )
    environment = rr.ansible_environment(config)
    assert environment["PATH"].split(":")[0] == str(Path(rr.sys.executable).parent)
    assert environment["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert environment["ANSIBLE_CONFIG"] == "/opt/llmfleet/ansible.cfg"
    assert environment["ANSIBLE_HOME"] == str(tmp_path / "state" / "ansible")
    assert environment["ANSIBLE_FORKS"] == "2"
    relaxed = make_config(tmp_path, environment={"ANSIBLE_HOST_KEY_CHECKING": "False"})
    assert rr.ansible_environment(relaxed)["ANSIBLE_HOST_KEY_CHECKING"] == "False"


def test_prune_runs_keeps_the_newest(tmp_path: Path) -> None:
    for name in ("20260101T000000Z-a", "20260102T000000Z-b", "20260103T000000Z-c"):
        (tmp_path / name).mkdir()
    rr.prune_runs(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "20260102T000000Z-b",
        "20260103T000000Z-c",
    ]


# -- the HTTP interface, on a real local server ----------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Served(ServedReceiver):
    def post(self, document: object, token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        status, body, _ = self.request(
            "POST", "/alertmanager", json.dumps(document).encode(), headers
        )
        return status, json.loads(body)

    def metrics(self, token: str = TOKEN) -> dict[str, float]:
        status, body, _ = self.request("GET", "/metrics", headers=bearer(token))
        assert status == 200
        return prometheus_samples(body.decode())


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    with contextlib.ExitStack() as running:

        def start(run: rr.RunFunction, **overrides: Any) -> Served:
            receiver = rr.Receiver(
                make_config(tmp_path, **overrides), TOKEN, run, inventory=inventory
            )
            return Served(receiver, running.enter_context(receiver_on_loopback(receiver)))

        yield start


def test_http_rejects_a_missing_or_wrong_token_and_runs_nothing(
    serve: Callable[..., Served],
) -> None:
    recorder = Recorder()
    served = serve(recorder)
    for token in (None, "wrong", TOKEN + "x"):
        status, body = served.post(payload(alert("gpu01")), token=token)
        assert status == 401
        assert body == {"error": "a valid Authorization: Bearer token is required"}
    status, _, response = served.request(
        "POST", "/alertmanager", b"{}", {"Authorization": f"Basic {TOKEN}"}
    )
    assert status == 401
    assert response.getheader("WWW-Authenticate") == 'Bearer realm="llmfleet"'
    time.sleep(0.1)
    assert recorder.requests == []
    assert not (served.receiver.config.state_dir / "cooldown.json").exists()
    records = log_records(served.receiver.config)
    assert [r["event"] for r in records] == ["unauthorized"] * 4
    assert records[0]["peer"] == "127.0.0.1"
    assert served.metrics()['llmfleet_rollback_alerts_total{decision="started"}'] == 0


def test_http_answers_before_the_run_and_runs_one_at_a_time(serve: Callable[..., Served]) -> None:
    recorder = Recorder(block=True)
    served = serve(recorder, cooldown_seconds=900)
    begun = time.monotonic()
    status, body = served.post(
        payload(
            alert("gpu01:9100", fingerprint="f1"),
            alert("gpu01:9400", name="EngineDown", fingerprint="f2"),
            alert("gpu02:9100", fingerprint="f3"),
            alert("gpu03:9100", action="notify", fingerprint="f4"),
        )
    )
    assert time.monotonic() - begun < 2
    assert status == 200
    assert body == {
        "decisions": [
            {"alertname": "EngineErrorRate", "host": "gpu01", "decision": "started"},
            {"alertname": "EngineDown", "host": "gpu01", "decision": "skipped_cooldown"},
            {"alertname": "EngineErrorRate", "host": "gpu02", "decision": "started"},
            {"alertname": "EngineErrorRate", "host": "gpu03", "decision": "ignored_not_rollback"},
        ]
    }
    assert recorder.entered.wait(5)
    assert (
        served.metrics().get('llmfleet_rollbacks_total{host="gpu01",result="successful"}') is None
    )
    # Alertmanager repeats the notification while the rollback still runs: nothing new starts.
    status, body = served.post(payload(alert("gpu01:9100", fingerprint="f1")))
    assert body["decisions"][0]["decision"] == "skipped_cooldown"
    recorder.release.set()
    assert served.receiver.wait_idle(10)
    assert [r.host for r in recorder.requests] == ["gpu01", "gpu02"]
    assert recorder.max_running == 1
    metrics = served.metrics()
    assert metrics['llmfleet_rollbacks_total{host="gpu01",result="successful"}'] == 1
    assert metrics['llmfleet_rollbacks_total{host="gpu02",result="successful"}'] == 1
    assert metrics['llmfleet_rollback_alerts_total{decision="started"}'] == 2
    assert metrics['llmfleet_rollback_alerts_total{decision="skipped_cooldown"}'] == 2
    assert metrics['llmfleet_rollback_alerts_total{decision="ignored_not_rollback"}'] == 1

    records = log_records(served.receiver.config)
    started = [r for r in records if r.get("decision") == "started"]
    assert [(r["host"], r["fingerprint"], r["alertname"]) for r in started] == [
        ("gpu01", "f1", "EngineErrorRate"),
        ("gpu02", "f3", "EngineErrorRate"),
    ]
    assert started[0]["metric"] == "llamacpp:requests_failed_ratio"
    assert started[0]["startsAt"] == "2026-05-01T10:00:00.000Z"
    assert started[0]["time"].endswith("Z")
    finished = [r for r in records if r["event"] == "finished"]
    assert [(r["host"], r["runner_status"], r["rc"], r["duration_seconds"]) for r in finished] == [
        ("gpu01", "successful", 0, 0.25),
        ("gpu02", "successful", 0, 0.25),
    ]
    assert finished[0]["fingerprint"] == "f1"


def test_http_failed_runs_are_counted_as_failed(serve: Callable[..., Served]) -> None:
    served = serve(Recorder(rr.RunOutcome("failed", 2, 1.5, "/runs/y")))
    assert served.post(payload(alert("gpu07")))[0] == 200
    assert served.receiver.wait_idle(5)
    assert served.metrics()['llmfleet_rollbacks_total{host="gpu07",result="failed"}'] == 1
    [finished] = [r for r in log_records(served.receiver.config) if r["event"] == "finished"]
    assert (finished["result"], finished["runner_status"], finished["rc"]) == (
        "failed",
        "failed",
        2,
    )


def test_http_bad_requests(serve: Callable[..., Served]) -> None:
    recorder = Recorder()
    served = serve(recorder)
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, body, _ = served.request("POST", "/alertmanager", b"{not json", auth)
    assert status == 400
    assert json.loads(body)["error"].startswith("the body is not JSON")
    status, body = served.post({"version": "4", "alerts": "x"})
    assert (status, body) == (400, {"error": "the payload has no list 'alerts'"})
    status, body, _ = served.request(
        "POST", "/alertmanager", b"", {**auth, "Content-Length": str(rr.MAX_BODY_BYTES + 1)}
    )
    assert status == 413
    status, _, _ = served.request("POST", "/other", b"{}", auth)
    assert status == 404
    status, _, _ = served.request("PUT", "/alertmanager", b"{}", auth)
    assert status == 405
    status, body, _ = served.request("GET", "/health")
    assert (status, body) == (200, b"ok\n")
    status, _, response = served.request("GET", "/metrics", headers=bearer(TOKEN))
    assert response.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    assert served.request("GET", "/nothing")[0] == 404
    assert recorder.requests == []


def test_http_answers_500_and_queues_nothing_when_the_state_cannot_be_saved(
    serve: Callable[..., Served],
) -> None:
    recorder = Recorder()
    served = serve(recorder)
    served.receiver.config.state_dir.write_text("a file where the state folder should be\n")
    status, body = served.post(payload(alert("gpu01")))
    assert status == 500
    assert body["error"].startswith("cannot save the cool-down state")
    time.sleep(0.1)
    assert recorder.requests == []
    assert served.metrics()['llmfleet_rollback_alerts_total{decision="started"}'] == 0


def test_an_unwritable_log_goes_to_stderr_and_the_rollback_still_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, log_file=tmp_path / "log-is-a-folder")
    config.log_file.mkdir()
    recorder = Recorder()
    receiver = rr.Receiver(config, TOKEN, recorder, clock=lambda: NOW, inventory=inventory)
    receiver.handle_payload(payload(alert("gpu01")))
    assert receiver.wait_idle(5)
    receiver.stop(5)
    assert [r.host for r in recorder.requests] == ["gpu01"]
    lines = [line for line in capsys.readouterr().err.splitlines() if "log-is-a-folder" in line]
    assert len(lines) == 2
    assert json.loads(lines[0].split("): ", 1)[1])["decision"] == "started"
    assert json.loads(lines[1].split("): ", 1)[1])["event"] == "finished"


# -- limits, the metrics token, the inventory check --------------------------------------------


def test_parse_config_limits_defaults_and_values(tmp_path: Path) -> None:
    required = {"token_file": "t", "playbook": "p.yml", "inventory": "i"}
    config = rr.parse_config(required, tmp_path)
    assert (config.max_connections, config.max_body_bytes, config.max_json_depth) == (
        16,
        1024 * 1024,
        16,
    )
    assert (config.header_timeout_seconds, config.request_timeout_seconds) == (10.0, 30.0)
    assert (config.metrics_token_file, config.inventory_cache_seconds) == (None, 60.0)
    config = rr.parse_config(
        {
            **required,
            "metrics_token_file": "metrics.token",
            "inventory_cache_seconds": 0,
            "limits": {
                "max_connections": 4,
                "header_timeout_seconds": 2.5,
                "request_timeout_seconds": 5,
                "max_body_bytes": 65536,
                "max_json_depth": 8,
            },
        },
        tmp_path,
    )
    assert config.metrics_token_file == tmp_path / "metrics.token"
    assert (config.max_connections, config.max_body_bytes, config.max_json_depth) == (4, 65536, 8)
    assert (config.header_timeout_seconds, config.request_timeout_seconds) == (2.5, 5.0)


def test_parse_config_names_bad_limits(tmp_path: Path) -> None:
    required = {"token_file": "t", "playbook": "p.yml", "inventory": "i"}
    with pytest.raises(rr.ConfigError) as caught:
        rr.parse_config(
            {
                **required,
                "limits": {
                    "max_connections": 0,
                    "header_timeout_seconds": 0,
                    "max_json_depth": 1000,
                    "max_body": 1,
                },
            },
            tmp_path,
        )
    assert caught.value.problems == [
        "unknown key limits.max_body (known: header_timeout_seconds, max_body_bytes, "
        "max_connections, max_json_depth, request_timeout_seconds)",
        "limits.max_connections must be an integer from 1 to 1024, not 0",
        "limits.header_timeout_seconds must be a number of seconds above 0 and at most 3600, not 0",
        "limits.max_json_depth must be an integer from 4 to 100, not 1000",
    ]
    with pytest.raises(rr.ConfigError) as caught:
        rr.parse_config(
            {**required, "limits": {"header_timeout_seconds": 20, "request_timeout_seconds": 5}},
            tmp_path,
        )
    assert caught.value.problems == [
        "limits.request_timeout_seconds (5) must be at least limits.header_timeout_seconds "
        "(20): the headers are part of the request"
    ]


def test_load_config_reads_the_metrics_token(tmp_path: Path) -> None:
    path = write_config(tmp_path, metrics_token_file="metrics.token")
    with pytest.raises(rr.ConfigError) as caught:
        rr.load_config(path)
    assert caught.value.problems == [
        f"cannot read the token file {tmp_path / 'metrics.token'}: No such file or directory"
    ]
    (tmp_path / "metrics.token").write_text("scrape-token\n")
    assert rr.load_config(path).metrics_token_file == tmp_path / "metrics.token"


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ('{"a": [1, {"b": "[[[[{{{{"}]}', 3),
        ('["\\"[[[", ["\\\\", [[]]]]', 4),
        ("[]", 1),
        ('"no brackets"', 0),
        ("[" * 50, 11),
    ],
)
def test_json_depth_skips_strings_and_stops_past_the_limit(text: str, depth: int) -> None:
    assert rr.json_depth(text, 10) == depth


def test_the_inventory_cache_lists_again_when_a_file_changes_or_it_is_old(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text("all: {}\n")
    clock = [0.0]
    listed: list[int] = []

    def lister() -> rr.Inventory:
        listed.append(1)
        return INVENTORY

    cache = rr.InventoryCache(inventory, 60, lister, clock=lambda: clock[0])
    assert cache() == INVENTORY
    assert cache() == INVENTORY
    assert len(listed) == 1, "reused while nothing changed"
    (inventory / "group_vars" / "all.yml").write_text("x: 1\n")
    cache()
    assert len(listed) == 2, "a new file: listed again"
    clock[0] = 61
    cache()
    assert len(listed) == 3, "older than inventory_cache_seconds: listed again"


def test_refusals_list_the_inventory_only_for_alerts_that_would_roll_back() -> None:
    calls: list[int] = []

    def counted() -> rr.Inventory:
        calls.append(1)
        return INVENTORY

    quiet = rr.parse_payload(payload(alert("x*", status="resolved"), alert("all", action="notify")))
    assert rr.refusals(quiet, counted, Path("hosts.yml")) == []
    assert calls == [], "no rollback alert: no inventory listing"
    loud = rr.parse_payload(payload(alert("gpu01"), alert("gpu99"), alert("gpus")))
    assert [r["instance"] for r in rr.refusals(loud, counted, Path("hosts.yml"))] == [
        "gpu99",
        "gpus",
    ]
    assert calls == [1], "listed once per payload"
