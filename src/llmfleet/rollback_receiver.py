"""`llmfleet receiver`: roll a fleet host back when Alertmanager says so.

Alertmanager (webhook payload version 4) posts the alerts routed to this receiver
to ``POST /alertmanager`` with ``Authorization: Bearer <token>``; the token is
compared in constant time with the one in ``token_file``. For every *firing*
alert whose label ``action`` is ``rollback``, the host named by its ``instance``
label (a ``:port`` suffix stripped) is rolled back by running the rollback
playbook through ``ansible_runner.run(..., limit=<host>)`` in a background
worker, one run at a time; Alertmanager gets its answer before the run starts.

A host is rolled back at most once per ``cooldown_seconds``, however often its
alert repeats and however many alerts of one payload name it. The time of each
host's last rollback is kept in ``<state_dir>/cooldown.json`` (written to a
temporary file and renamed), so a restart of the receiver keeps the cool-down.

Before a run the worker lists the inventory (``ansible-inventory --list``) and
runs only when the name is a host of it and not a group: an ``instance`` of
``all``, a group name or an unknown host never becomes a wider ``--limit``.

Every decision and every finished run is one JSON line in ``log_file``, with the
alert that caused it. ``GET /metrics`` exports ``llmfleet_rollbacks_total{host,result}``
and ``llmfleet_rollback_alerts_total{decision}`` (prometheus_client, a registry per
receiver); ``GET /health`` answers 200.

The configuration file (YAML)::

    ---
    listen:                           # optional
      address: 127.0.0.1              # default 127.0.0.1 (Alertmanager runs on the same host)
      port: 9095                      # default 9095
    token_file: /etc/llmfleet/receiver.token   # required: the bearer token, one line
    cooldown_seconds: 900             # optional, default 900
    state_dir: /var/lib/llmfleet-receiver      # optional: cooldown.json and runs/<run>/
    log_file: /var/log/llmfleet-receiver/actions.jsonl   # optional
    playbook: /opt/llmfleet/playbooks/rollback.yml        # required
    inventory: /opt/llmfleet/inventories/site             # required: a file or a folder
    ansible_cfg: /opt/llmfleet/ansible.cfg     # optional: exported as ANSIBLE_CONFIG
    project_dir: /opt/llmfleet        # optional: the runs' working folder (default: the
                                      # folder of ansible_cfg, else the playbook's folder)
    extravars: {}                     # optional: passed with -e to every run
    environment: {}                   # optional: variables for ansible (strings)
    run_timeout_seconds: 1800         # optional: a run is cancelled after this long
    keep_runs: 50                     # optional: run folders kept under state_dir/runs

Relative paths are taken from the configuration file's folder. The file is checked
against a JSON Schema (`SCHEMA`, with jsonschema): unknown keys and wrong values are
errors that name the key; every problem is reported at once.
"""

from __future__ import annotations

import hmac
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily

from llmfleet.fileio import read_secret, write_atomic
from llmfleet.validation import check, compile_schema, strict_mapping

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 9095
DEFAULT_COOLDOWN_S = 900.0
DEFAULT_STATE_DIR = "/var/lib/llmfleet-receiver"
DEFAULT_LOG_FILE = "/var/log/llmfleet-receiver/actions.jsonl"
DEFAULT_RUN_TIMEOUT_S = 1800
DEFAULT_KEEP_RUNS = 50
#: Seconds `ansible-inventory --list` may take before a run.
INVENTORY_TIMEOUT_S = 120
#: The largest request body accepted (Alertmanager's payloads are far smaller).
MAX_BODY_BYTES = 1024 * 1024
WEBHOOK_PATH = "/alertmanager"
STATE_FILE = "cooldown.json"

#: Every decision the receiver takes on one alert.
STARTED = "started"
SKIPPED_COOLDOWN = "skipped_cooldown"
IGNORED_RESOLVED = "ignored_resolved"
IGNORED_NOT_ROLLBACK = "ignored_not_rollback"
IGNORED_BAD_INSTANCE = "ignored_bad_instance"
DECISIONS = (
    STARTED,
    SKIPPED_COOLDOWN,
    IGNORED_RESOLVED,
    IGNORED_NOT_ROLLBACK,
    IGNORED_BAD_INSTANCE,
)
RESULTS = ("successful", "failed")

#: An inventory host name usable as a --limit that matches only itself: no pattern characters
#: (``* ? [ ] ! & : , ~ @``), no spaces, not starting with a dot or a dash.
HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: Names that are always groups in Ansible, whatever the inventory holds.
IMPLICIT_GROUPS = frozenset({"all", "ungrouped"})


class ConfigError(ValueError):
    """The configuration file is not valid; ``problems`` lists every problem."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class PayloadError(ValueError):
    """The request body is not an Alertmanager webhook payload."""


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiverConfig:
    token_file: Path
    playbook: Path
    inventory: Path
    address: str = DEFAULT_ADDRESS
    port: int = DEFAULT_PORT
    cooldown_seconds: float = DEFAULT_COOLDOWN_S
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    log_file: Path = Path(DEFAULT_LOG_FILE)
    ansible_cfg: Path | None = None
    project_dir: Path | None = None
    extravars: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    run_timeout_seconds: int = DEFAULT_RUN_TIMEOUT_S
    keep_runs: int = DEFAULT_KEEP_RUNS

    @property
    def run_dir(self) -> Path:
        """The folder of the runs: the folder ansible-playbook runs in."""
        if self.project_dir is not None:
            return self.project_dir
        return self.ansible_cfg.parent if self.ansible_cfg is not None else self.playbook.parent


PATH_KEYS = (
    "token_file",
    "playbook",
    "inventory",
    "state_dir",
    "log_file",
    "ansible_cfg",
    "project_dir",
)
REQUIRED_PATHS = ("token_file", "playbook", "inventory")


def _path_schema(key: str) -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": r"\S",
        "message": f"{key} must be a non-empty path, not {{value!r}}",
        "missing": f"{key} is required (a path)",
    }


#: The configuration's shape, checked with jsonschema; the order of ``properties`` is the
#: order problems are reported in. Paths are resolved by ``parse_config`` afterwards.
SCHEMA = strict_mapping(
    {
        "listen": strict_mapping(
            {
                "address": {
                    "type": "string",
                    "pattern": r"\S",
                    "message": "listen.address must be an IP address or a name, not {value!r}",
                },
                "port": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 65535,
                    "message": "listen.port must be an integer from 1 to 65535, not {value!r}",
                },
            },
            message="listen must be a mapping with address and port",
            unknown="unknown key listen.{key} (known: {allowed})",
        ),
        "cooldown_seconds": {
            "type": "number",
            "minimum": 0,
            "message": "cooldown_seconds must be a number of seconds >= 0, not {value!r}",
        },
        "run_timeout_seconds": {
            "type": "integer",
            "minimum": 1,
            "message": "run_timeout_seconds must be an integer >= 1, not {value!r}",
        },
        "keep_runs": {
            "type": "integer",
            "minimum": 1,
            "message": "keep_runs must be an integer >= 1, not {value!r}",
        },
        "extravars": {
            "type": ["object", "null"],
            "propertyNames": {"type": "string"},
            "message": "extravars must be a mapping with string keys",
        },
        "environment": {
            "type": ["object", "null"],
            "message": "environment must be a mapping of variable names to strings",
            "propertyNames": {
                "type": "string",
                "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                "message": "environment: {value!r} is not a variable name",
            },
            "additionalProperties": {
                "type": "string",
                "message": "environment.{key} must be a string (quote it), not {value!r}",
            },
        },
        **{key: _path_schema(key) for key in PATH_KEYS},
    },
    required=REQUIRED_PATHS,
    unknown="unknown key {key!r} (known: {allowed})",
)
_VALIDATOR = compile_schema(SCHEMA)


def parse_config(data: object, base: Path) -> ReceiverConfig:
    """The configuration from a parsed YAML document; relative paths are taken from ``base``.

    Checks types and values only, not the file system (see ``check_paths``). Raises
    ConfigError naming every problem.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(base, ["the configuration must be a mapping of keys to values"])
    problems = [issue.message for issue in check(_VALIDATOR, dict(data))]
    if problems:
        raise ConfigError(base, problems)

    def path(value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (base / candidate).resolve()

    def optional(key: str) -> Path | None:
        return path(data[key]) if data.get(key) is not None else None

    listen = data.get("listen", {})
    return ReceiverConfig(
        token_file=path(data["token_file"]),
        playbook=path(data["playbook"]),
        inventory=path(data["inventory"]),
        address=listen.get("address", DEFAULT_ADDRESS),
        port=listen.get("port", DEFAULT_PORT),
        cooldown_seconds=float(data.get("cooldown_seconds", DEFAULT_COOLDOWN_S)),
        state_dir=path(data.get("state_dir", DEFAULT_STATE_DIR)),
        log_file=path(data.get("log_file", DEFAULT_LOG_FILE)),
        ansible_cfg=optional("ansible_cfg"),
        project_dir=optional("project_dir"),
        extravars=dict(data.get("extravars") or {}),
        environment=dict(data.get("environment") or {}),
        run_timeout_seconds=data.get("run_timeout_seconds", DEFAULT_RUN_TIMEOUT_S),
        keep_runs=data.get("keep_runs", DEFAULT_KEEP_RUNS),
    )


def check_paths(config: ReceiverConfig) -> list[str]:
    """What is missing on disk for the configuration to work: one line per problem."""
    problems = []
    if not config.playbook.is_file():
        problems.append(f"playbook {config.playbook} is not a file")
    if not config.inventory.exists():
        problems.append(f"inventory {config.inventory} does not exist")
    if config.ansible_cfg is not None and not config.ansible_cfg.is_file():
        problems.append(f"ansible_cfg {config.ansible_cfg} is not a file")
    if not config.run_dir.is_dir():
        problems.append(f"project_dir {config.run_dir} is not a folder")
    try:
        read_token(config.token_file)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def load_config(path: Path) -> ReceiverConfig:
    """Read, parse and check the configuration file. Raises ConfigError naming every problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(path, [f"cannot read it: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"]) from None
    config = parse_config(data, path.resolve().parent)
    problems = check_paths(config)
    if problems:
        raise ConfigError(path, problems)
    return config


def read_token(path: Path) -> str:
    """The bearer token in ``path`` (surrounding white space removed). Raises ValueError."""
    return read_secret(path, "token")


# -- authentication, alerts and decisions: pure functions ------------------------------------


def is_authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries ``Bearer <token>``, compared in constant time."""
    if not header or not token:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


@dataclass(frozen=True)
class Alert:
    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str
    fingerprint: str

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def log_fields(self) -> dict[str, Any]:
        """The alert's part of a log line."""
        return {
            "alertname": self.name,
            "alert_status": self.status,
            "instance": self.labels.get("instance", ""),
            "metric": self.labels.get("metric", ""),
            "rule": self.labels.get("rule", ""),
            "severity": self.labels.get("severity", ""),
            "action": self.labels.get("action", ""),
            "fingerprint": self.fingerprint,
            "startsAt": self.starts_at,
            "summary": self.annotations.get("summary", ""),
        }


def _strings(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PayloadError(f"{where} must be an object of strings")
    return {str(key): str(item) for key, item in value.items()}


def parse_payload(payload: object) -> list[Alert]:
    """The alerts of an Alertmanager webhook payload (version 4). Raises PayloadError."""
    if not isinstance(payload, Mapping):
        raise PayloadError("the payload must be a JSON object")
    version = payload.get("version", "4")
    if str(version) != "4":
        raise PayloadError(f"webhook payload version {version!r} is not supported (only 4)")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("the payload has no list 'alerts'")
    parsed = []
    for number, alert in enumerate(alerts):
        if not isinstance(alert, Mapping):
            raise PayloadError(f"alerts[{number}] must be an object")
        parsed.append(
            Alert(
                status=str(alert.get("status", "")),
                labels=_strings(alert.get("labels"), f"alerts[{number}].labels"),
                annotations=_strings(alert.get("annotations"), f"alerts[{number}].annotations"),
                starts_at=str(alert.get("startsAt", "")),
                fingerprint=str(alert.get("fingerprint", "")),
            )
        )
    return parsed


def host_of_instance(instance: str) -> str | None:
    """The inventory host an ``instance`` label names (``host`` or ``host:port``); None if unusable.

    Only a name that ``--limit`` matches literally is returned: no pattern characters, no
    IPv6 address, not ``all`` or ``ungrouped``.
    """
    host = instance.strip()
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        host = name
    if not HOST_RE.match(host) or host in IMPLICIT_GROUPS:
        return None
    return host


@dataclass(frozen=True)
class Decision:
    alert: Alert
    decision: str
    host: str | None
    reason: str


def decide(
    alerts: Iterable[Alert], last_rollback: Mapping[str, float], now: float, cooldown_s: float
) -> list[Decision]:
    """One decision per alert, in order; a host started earlier in the list counts as rolled back.

    ``last_rollback`` maps a host to the time (seconds since the epoch) its last rollback
    started.
    """
    recent = dict(last_rollback)
    decisions = []
    for alert in alerts:
        instance = alert.labels.get("instance", "")
        host = host_of_instance(instance)
        if alert.status != "firing":
            decision = Decision(alert, IGNORED_RESOLVED, host, f"alert is {alert.status or '?'}")
        elif alert.labels.get("action") != "rollback":
            action = alert.labels.get("action", "")
            decision = Decision(alert, IGNORED_NOT_ROLLBACK, host, f"action is {action!r}")
        elif host is None:
            reason = f"instance {instance!r} does not name one inventory host"
            decision = Decision(alert, IGNORED_BAD_INSTANCE, None, reason)
        elif host in recent and now - recent[host] < cooldown_s:
            age = max(now - recent[host], 0.0)
            reason = f"last rollback {age:.0f} s ago, cool-down {cooldown_s:.0f} s"
            decision = Decision(alert, SKIPPED_COOLDOWN, host, reason)
        else:
            recent[host] = now
            decision = Decision(alert, STARTED, host, "rollback queued")
        decisions.append(decision)
    return decisions


def apply_decisions(
    last_rollback: Mapping[str, float], decisions: Iterable[Decision], now: float
) -> dict[str, float]:
    """The cool-down state after ``decisions``: every started host rolled back at ``now``."""
    state = dict(last_rollback)
    for decision in decisions:
        if decision.decision == STARTED and decision.host is not None:
            state[decision.host] = now
    return state


def prune_state(
    last_rollback: Mapping[str, float], now: float, cooldown_s: float
) -> dict[str, float]:
    """The entries still inside their cool-down (the others decide nothing any more)."""
    return {host: at for host, at in last_rollback.items() if now - at < cooldown_s}


# -- cool-down state on disk -----------------------------------------------------------------


def load_state(path: Path) -> dict[str, float]:
    """Host -> time of its last rollback, from ``path``; empty when there is none yet.

    Raises ValueError when the file exists but is not a state file, rather than forget a
    cool-down silently.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the cool-down state {path}: {exc}") from None
    hosts = document.get("last_rollback") if isinstance(document, dict) else None
    times = hosts.values() if isinstance(hosts, dict) else [None]
    if not all(isinstance(at, int | float) and not isinstance(at, bool) for at in times):
        raise ValueError(f"{path} is not a cool-down state file (no 'last_rollback' map)")
    return {str(host): float(at) for host, at in hosts.items()}


def save_state(path: Path, last_rollback: Mapping[str, float]) -> None:
    """Write the state atomically (readable by the receiver's user only)."""
    document = {"version": 1, "last_rollback": dict(sorted(last_rollback.items()))}
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode(), mode=0o600)


# -- metrics ---------------------------------------------------------------------------------

#: What generate_latest writes: the Prometheus text format 0.0.4.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metric_families(
    rollbacks: Mapping[tuple[str, str], int], alerts: Mapping[str, int]
) -> list[CounterMetricFamily]:
    """The two counters as prometheus_client metric families, samples sorted by label.

    Every decision is exported, 0 included, so that ``rate()`` sees the first increase.
    """
    runs = CounterMetricFamily(
        "llmfleet_rollbacks",
        "Rollback runs finished, by host and result.",
        labels=["host", "result"],
    )
    for (host, result), count in sorted(rollbacks.items()):
        runs.add_metric([host, result], count)
    decided = CounterMetricFamily(
        "llmfleet_rollback_alerts",
        "Alerts received, by the receiver's decision.",
        labels=["decision"],
    )
    for decision in sorted(set(DECISIONS) | set(alerts)):
        decided.add_metric([decision], alerts.get(decision, 0))
    return [runs, decided]


class _Families:
    """A prometheus_client collector: metric families from a function, read at each scrape."""

    def __init__(self, families: Callable[[], list[CounterMetricFamily]]) -> None:
        self.collect = families


def format_metrics(rollbacks: Mapping[tuple[str, str], int], alerts: Mapping[str, int]) -> str:
    """The text exposition (0.0.4) of the two counters with these counts."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(lambda: metric_families(rollbacks, alerts)))  # type: ignore[arg-type]
    return generate_latest(registry).decode("utf-8")


class RollbackMetrics:
    """The receiver's counters, exported by prometheus_client from a registry of their own.

    A collector rather than prometheus_client's Counter objects: it exports exactly the two
    ``_total`` series (no ``_created`` series, which prometheus_client 0.16 cannot turn off)
    and every decision from the start, 0 included.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rollbacks: Counter[tuple[str, str]] = Counter()
        self._alerts: Counter[str] = Counter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Families(self._families))  # type: ignore[arg-type]

    def count_alert(self, decision: str) -> None:
        with self._lock:
            self._alerts[decision] += 1

    def count_rollback(self, host: str, result: str) -> None:
        with self._lock:
            self._rollbacks[(host, result)] += 1

    def _families(self) -> list[CounterMetricFamily]:
        with self._lock:
            return metric_families(dict(self._rollbacks), dict(self._alerts))

    def exposition(self) -> str:
        """``GET /metrics``: the registry in the text format (0.0.4)."""
        return generate_latest(self.registry).decode("utf-8")


# -- running the rollback playbook -----------------------------------------------------------


@dataclass(frozen=True)
class RollbackRequest:
    host: str
    alert: Alert
    decided_at: float


@dataclass(frozen=True)
class RunOutcome:
    #: ansible-runner's status (successful, failed, timeout, canceled), or rejected or error.
    status: str
    rc: int | None
    duration_seconds: float
    private_data_dir: str = ""
    detail: str = ""

    @property
    def result(self) -> str:
        return "successful" if self.status == "successful" else "failed"


RunFunction = Callable[[RollbackRequest], RunOutcome]


def ansible_environment(config: ReceiverConfig) -> dict[str, str]:
    """The variables the runs add to the receiver's own environment.

    The receiver's interpreter folder leads PATH (ansible-playbook is installed next to it);
    host key checking stays on (ansible-runner turns it off otherwise); ANSIBLE_HOME is under
    the state folder. ``environment`` from the configuration has the last word.
    """
    environment = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_HOME": str(config.state_dir / "ansible"),
    }
    if config.ansible_cfg is not None:
        environment["ANSIBLE_CONFIG"] = str(config.ansible_cfg)
    environment.update(config.environment)
    return environment


def inventory_names(listing: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(hosts, groups) of an ``ansible-inventory --list`` document."""
    groups = {name for name in listing if name != "_meta"}
    hosts = set(listing.get("_meta", {}).get("hostvars", {}))
    for name in groups:
        entry = listing.get(name)
        if isinstance(entry, Mapping):
            hosts.update(entry.get("hosts", []))
    return hosts, groups | IMPLICIT_GROUPS


def check_inventory_host(config: ReceiverConfig, host: str, environment: Mapping[str, str]) -> str:
    """Why ``host`` must not be the --limit of a run; an empty string when it may be."""
    env = {**os.environ, **environment}
    command = shutil.which("ansible-inventory", path=env.get("PATH"))
    if command is None:
        return "ansible-inventory is not installed next to the receiver"
    try:
        listed = subprocess.run(
            [command, "-i", str(config.inventory), "--list"],
            cwd=config.run_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=INVENTORY_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"ansible-inventory took more than {INVENTORY_TIMEOUT_S} s"
    if listed.returncode != 0:
        return f"ansible-inventory failed: {listed.stderr.strip()[-500:]}"
    try:
        hosts, groups = inventory_names(json.loads(listed.stdout))
    except (json.JSONDecodeError, AttributeError):
        return "ansible-inventory --list did not print a JSON inventory"
    if host in groups:
        return f"{host} is a group of the inventory, not a host"
    if host not in hosts:
        return f"{host} is not a host of the inventory {config.inventory}"
    return ""


def prune_runs(runs: Path, keep: int) -> None:
    """Remove the oldest run folders beyond ``keep`` (names sort by time)."""
    folders = sorted(path for path in runs.iterdir() if path.is_dir()) if runs.is_dir() else []
    for folder in folders[: max(len(folders) - keep, 0)]:
        shutil.rmtree(folder, ignore_errors=True)


def run_rollback(config: ReceiverConfig, request: RollbackRequest) -> RunOutcome:
    """Run the rollback playbook limited to ``request.host`` with ansible-runner."""
    import ansible_runner

    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    runs = config.state_dir / "runs"
    private_data_dir = runs / f"{stamp}-{request.host}"
    environment = ansible_environment(config)
    refused = check_inventory_host(config, request.host, environment)
    if refused:
        return RunOutcome("rejected", None, time.monotonic() - started, detail=refused)
    private_data_dir.mkdir(parents=True, exist_ok=False)
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private_data_dir),
            project_dir=str(config.run_dir),
            playbook=str(config.playbook),
            inventory=str(config.inventory),
            limit=request.host,
            extravars=dict(config.extravars),
            envvars=environment,
            timeout=config.run_timeout_seconds,
            suppress_env_files=True,
            quiet=True,
        )
    except Exception as exc:  # ansible-runner's own errors: a run that could not start
        elapsed = time.monotonic() - started
        detail = f"{type(exc).__name__}: {exc}"
        return RunOutcome("error", None, elapsed, str(private_data_dir), detail)
    finally:
        prune_runs(runs, config.keep_runs)
    elapsed = time.monotonic() - started
    return RunOutcome(str(runner.status), runner.rc, elapsed, str(private_data_dir))


# -- the receiver: state, log, worker --------------------------------------------------------


def utc_now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ActionLog:
    """JSON lines appended to the log file, one per decision or finished run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record; when the file cannot be written, the record goes to stderr
        (the journal) instead, so a full disk never stops a rollback."""
        line = json.dumps({"time": utc_now_text(), **record}, sort_keys=False) + "\n"
        with self._lock:
            try:
                with self.path.open("a", encoding="utf-8") as stream:
                    stream.write(line)
            except OSError as exc:
                sys.stderr.write(f"cannot write {self.path} ({exc.strerror}): {line}")


class Receiver:
    """Decisions, cool-down state, counters and the single worker that runs rollbacks."""

    def __init__(
        self,
        config: ReceiverConfig,
        token: str,
        run: RunFunction,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.token = token
        self._run = run
        self._clock = clock
        self._state_path = config.state_dir / STATE_FILE
        self._state = load_state(self._state_path)
        self._log = ActionLog(config.log_file)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._queue: queue.Queue[RollbackRequest | None] = queue.Queue()
        self._metrics = RollbackMetrics()
        self._worker = threading.Thread(target=self._work, name="rollback-worker", daemon=True)
        self._worker.start()

    def handle_payload(self, payload: object) -> list[Decision]:
        """Decide on each alert of a payload; log, count, queue rollbacks. Raises PayloadError."""
        alerts = parse_payload(payload)
        with self._lock:
            now = self._clock()
            decisions = decide(alerts, self._state, now, self.config.cooldown_seconds)
            started = [d for d in decisions if d.decision == STARTED]
            if started:
                state = apply_decisions(self._state, decisions, now)
                state = prune_state(state, now, self.config.cooldown_seconds)
                save_state(self._state_path, state)
                self._state = state
            for decision in decisions:
                self._metrics.count_alert(decision.decision)
                self._log.write(
                    {
                        "event": "alert",
                        "decision": decision.decision,
                        "reason": decision.reason,
                        "host": decision.host,
                        **decision.alert.log_fields(),
                    }
                )
            for decision in started:
                assert decision.host is not None
                self._pending += 1
                self._queue.put(RollbackRequest(decision.host, decision.alert, now))
        return decisions

    def log_unauthorized(self, peer: str, path: str) -> None:
        self._log.write({"event": "unauthorized", "peer": peer, "path": path})

    def metrics_text(self) -> str:
        return self._metrics.exposition()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued rollback has finished; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Drop the queued rollbacks (their cool-down is cleared), finish the running one."""
        dropped = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                dropped.append(item)
        with self._lock:
            state = dict(self._state)
            for item in dropped:
                state.pop(item.host, None)
                self._pending -= 1
                self._log.write(
                    {
                        "event": "dropped",
                        "host": item.host,
                        "reason": "the receiver stopped before the rollback ran",
                        **item.alert.log_fields(),
                    }
                )
            if dropped:
                save_state(self._state_path, state)
                self._state = state
            self._idle.notify_all()
        self._queue.put(None)
        self._worker.join(timeout)

    def _work(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                return
            try:
                outcome = self._run(request)
            except Exception as exc:  # a broken run function must not stop the worker
                outcome = RunOutcome("error", None, 0.0, detail=f"{type(exc).__name__}: {exc}")
            with self._lock:
                self._metrics.count_rollback(request.host, outcome.result)
                self._log.write(
                    {
                        "event": "finished",
                        "host": request.host,
                        "result": outcome.result,
                        "runner_status": outcome.status,
                        "rc": outcome.rc,
                        "duration_seconds": round(outcome.duration_seconds, 3),
                        "private_data_dir": outcome.private_data_dir,
                        "detail": outcome.detail,
                        **request.alert.log_fields(),
                    }
                )
                self._pending -= 1
                self._idle.notify_all()


# -- HTTP ------------------------------------------------------------------------------------


def make_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    """The request handler class of ``receiver``'s HTTP interface."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "llmfleet-receiver"
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, body: str, content_type: str = "application/json") -> None:
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if code == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="llmfleet"')
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str) -> None:
            self._send(code, json.dumps({"error": message}) + "\n")

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, "ok\n", "text/plain; charset=utf-8")
            elif self.path == "/metrics":
                self._send(200, receiver.metrics_text(), METRICS_CONTENT_TYPE)
            else:
                self._error(404, f"no {self.path} here (GET /metrics, GET /health)")

        def do_POST(self) -> None:
            if self.path != WEBHOOK_PATH:
                self._error(404, f"no {self.path} here (POST {WEBHOOK_PATH})")
                return
            length_text = self.headers.get("Content-Length")
            if not is_authorized(self.headers.get("Authorization"), receiver.token):
                receiver.log_unauthorized(self.client_address[0], self.path)
                self.close_connection = True
                self._error(401, "a valid Authorization: Bearer token is required")
                return
            if length_text is None or not length_text.isdigit():
                self.close_connection = True
                self._error(411, "Content-Length is required")
                return
            length = int(length_text)
            if length > MAX_BODY_BYTES:
                self.close_connection = True
                self._error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
                return
            body = self.rfile.read(length)
            try:
                decisions = receiver.handle_payload(json.loads(body))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                self._error(400, f"the body is not JSON: {exc}")
                return
            except PayloadError as exc:
                self._error(400, str(exc))
                return
            except OSError as exc:  # the cool-down state could not be saved: nothing was queued
                self._error(500, f"cannot save the cool-down state: {exc}")
                return
            summary = [
                {"alertname": d.alert.name, "host": d.host, "decision": d.decision}
                for d in decisions
            ]
            self._send(200, json.dumps({"decisions": summary}) + "\n")

        def do_PUT(self) -> None:
            self._error(405, "only GET and POST")

        do_DELETE = do_PATCH = do_PUT

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


def make_server(receiver: Receiver, address: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((address, port), make_handler(receiver))
    server.daemon_threads = True
    return server


def serve(config: ReceiverConfig, run: RunFunction | None = None) -> int:
    """Run the receiver until SIGTERM or SIGINT; the running rollback is finished first."""
    token = read_token(config.token_file)
    runner = run if run is not None else (lambda request: run_rollback(config, request))
    receiver = Receiver(config, token, runner)
    server = make_server(receiver, config.address, config.port)
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    print(
        f"llmfleet receiver: listening on http://{host}:{port}{WEBHOOK_PATH}, "
        f"cool-down {config.cooldown_seconds:g} s, log {config.log_file}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
        print("llmfleet receiver: stopping; a running rollback finishes first", file=sys.stderr)
        receiver.stop()
    return 0
