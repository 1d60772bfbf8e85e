"""`llmfleet receiver`: roll a fleet host back when Alertmanager says so.

Alertmanager (webhook payload version 4) posts the alerts routed to this receiver
to ``POST /alertmanager`` with ``Authorization: Bearer <token>``; the token is
compared in constant time with the one in ``token_file``. For every *firing*
alert whose label ``action`` is ``rollback``, the host named by its ``instance``
label (a ``:port`` suffix stripped) is rolled back by running the rollback
playbook through ``ansible_runner.run(..., limit=<host>)`` in a background
worker, one run at a time; Alertmanager gets its answer before the run starts.

Before anything is recorded, every alert that would start a rollback must name one host of
the inventory (``ansible-inventory --list``, reused for ``inventory_cache_seconds`` while the
inventory's files do not change): an ``instance`` that is a pattern (``all``, ``*``,
``a:b``), a group or an unknown host is answered 422 with the reason for each, and nothing is
logged, counted as a decision, queued or spent from a cool-down. The worker lists the
inventory again before each run, so a host removed since is still not touched.

A host is rolled back at most once per ``cooldown_seconds``, however often its
alert repeats and however many alerts of one payload name it. The time of each
host's last rollback is kept in ``<state_dir>/cooldown.json`` (written to a
temporary file and renamed), so a restart of the receiver keeps the cool-down.

Every connection is bounded: the request line and headers must arrive within
``header_timeout_seconds`` and the whole request within ``request_timeout_seconds`` (total
deadlines, not per read: a client that sends a byte a second is cut too); at most
``max_connections`` are served at once, more are answered 503 and closed; a body must have a
Content-Length of at most ``max_body_bytes``, be ``application/json`` and nest at most
``max_json_depth`` deep. Each refusal is a 4xx (or 503) with a JSON ``error`` naming the
input, and every connection is answered with ``Connection: close``.

Every decision and every finished run is one JSON line in ``log_file``, with the
alert that caused it (and every request with a missing or wrong token, as ``unauthorized``).
``GET /metrics`` needs a bearer token too: the ``metrics_token_file``'s (Prometheus'
``authorization: {credentials_file: ...}``) or, without one, the webhook's; it exports
``llmfleet_rollbacks_total{host,result}``, ``llmfleet_rollback_alerts_total{decision}`` and
``llmfleet_rollback_requests_refused_total{reason}`` (prometheus_client, a registry per
receiver). ``GET /health`` answers 200 to anyone.

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
    metrics_token_file: /etc/llmfleet/receiver-metrics.token  # optional: GET /metrics's
                                      # token (default: token_file's)
    inventory_cache_seconds: 60       # optional: how long an inventory listing is reused
    limits:                           # optional
      max_connections: 16             # connections served at once (more: 503, closed)
      header_timeout_seconds: 10      # request line and headers, in all
      request_timeout_seconds: 30     # the whole request, body included, in all
      max_body_bytes: 1048576         # the largest Content-Length taken
      max_json_depth: 16              # the deepest nesting of [ and { in a body

Relative paths are taken from the configuration file's folder. The file is checked
against a JSON Schema (`SCHEMA`, with jsonschema): unknown keys and wrong values are
errors that name the key; every problem is reported at once.
"""

from __future__ import annotations

import contextlib
import hmac
import io
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
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

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
#: The deepest nesting of [ and { in a body (Alertmanager's payloads nest 3 deep); far below
#: the depth where Python's json parser runs out of stack.
DEFAULT_MAX_JSON_DEPTH = 16
MAX_JSON_DEPTH_LIMIT = 100
DEFAULT_MAX_CONNECTIONS = 16
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_INVENTORY_CACHE_S = 60.0
#: Seconds an answer may take to be written (a client that does not read is cut).
WRITE_TIMEOUT_S = 10.0
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
#: Why a request was refused, as the refusals counter labels it.
REFUSALS = (
    "unauthorized",
    "not_found",
    "bad_request",
    "length_required",
    "too_large",
    "unsupported_media_type",
    "timeout",
    "not_a_host",
    "inventory_unavailable",
    "busy",
)

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


class InventoryError(Exception):
    """The inventory could not be listed; the message says why."""


class Refused(ValueError):
    """Alerts that would roll back something that is not one inventory host; ``refusals``
    holds one ``{alertname, instance, reason}`` per alert."""

    def __init__(self, refusals: list[dict[str, str]]) -> None:
        self.refusals = refusals
        reasons = "; ".join(f"{r['alertname']}: {r['reason']}" for r in refusals)
        super().__init__(f"no rollback: {reasons}")


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
    metrics_token_file: Path | None = None
    inventory_cache_seconds: float = DEFAULT_INVENTORY_CACHE_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_S
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_S
    max_body_bytes: int = MAX_BODY_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH

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
    "metrics_token_file",
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
        "inventory_cache_seconds": {
            "type": "number",
            "minimum": 0,
            "message": "inventory_cache_seconds must be a number of seconds >= 0, not {value!r}",
        },
        "limits": strict_mapping(
            {
                "max_connections": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 1024,
                    "message": "limits.max_connections must be an integer from 1 to 1024, "
                    "not {value!r}",
                },
                "header_timeout_seconds": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 3600,
                    "message": "limits.header_timeout_seconds must be a number of seconds "
                    "above 0 and at most 3600, not {value!r}",
                },
                "request_timeout_seconds": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 3600,
                    "message": "limits.request_timeout_seconds must be a number of seconds "
                    "above 0 and at most 3600, not {value!r}",
                },
                "max_body_bytes": {
                    "type": "integer",
                    "minimum": 1024,
                    "maximum": 64 * 1024 * 1024,
                    "message": "limits.max_body_bytes must be an integer from 1024 to "
                    "67108864, not {value!r}",
                },
                "max_json_depth": {
                    "type": "integer",
                    "minimum": 4,
                    "maximum": MAX_JSON_DEPTH_LIMIT,
                    "message": f"limits.max_json_depth must be an integer from 4 to "
                    f"{MAX_JSON_DEPTH_LIMIT}, not {{value!r}}",
                },
            },
            message="limits must be a mapping of max_connections, header_timeout_seconds, "
            "request_timeout_seconds, max_body_bytes, max_json_depth",
            unknown="unknown key limits.{key} (known: {allowed})",
        ),
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
    limits = data.get("limits", {})
    header_timeout = float(limits.get("header_timeout_seconds", DEFAULT_HEADER_TIMEOUT_S))
    request_timeout = float(limits.get("request_timeout_seconds", DEFAULT_REQUEST_TIMEOUT_S))
    if request_timeout < header_timeout:
        raise ConfigError(
            base,
            [
                f"limits.request_timeout_seconds ({request_timeout:g}) must be at least "
                f"limits.header_timeout_seconds ({header_timeout:g}): the headers are part of "
                "the request"
            ],
        )
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
        metrics_token_file=optional("metrics_token_file"),
        inventory_cache_seconds=float(
            data.get("inventory_cache_seconds", DEFAULT_INVENTORY_CACHE_S)
        ),
        max_connections=limits.get("max_connections", DEFAULT_MAX_CONNECTIONS),
        header_timeout_seconds=header_timeout,
        request_timeout_seconds=request_timeout,
        max_body_bytes=limits.get("max_body_bytes", MAX_BODY_BYTES),
        max_json_depth=limits.get("max_json_depth", DEFAULT_MAX_JSON_DEPTH),
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
    for path in (config.token_file, config.metrics_token_file):
        try:
            if path is not None:
                read_token(path)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def load_config(path: Path) -> ReceiverConfig:
    """Read, parse and check the configuration file. Raises ConfigError naming every problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(path, [f"cannot read it: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(path, ["not UTF-8 text"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"]) from None
    except RecursionError:
        raise ConfigError(path, ["nested too deeply to be a configuration"]) from None
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


#: The characters that matter to the nesting of a JSON text.
_JSON_SIGNIFICANT = re.compile(r'[\[\]{}"\\]')


def json_depth(text: str, limit: int) -> int:
    """The deepest nesting of [ and { in a JSON text, strings aside; counting stops past
    ``limit``. Linear in the text, whatever it holds (no recursion, no backtracking)."""
    depth = deepest = 0
    in_string = False
    escaped_at = -1
    for found in _JSON_SIGNIFICANT.finditer(text):
        position, char = found.start(), found.group()
        if position == escaped_at:
            continue
        if in_string:
            if char == "\\":
                escaped_at = position + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif char in "]}":
            depth -= 1
    return deepest


def parse_body(body: bytes, max_depth: int) -> object:
    """The JSON document in a request body. Raises PayloadError naming what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"the body is not UTF-8 text (byte {exc.start})") from None
    depth = json_depth(text, max_depth)
    if depth > max_depth:
        raise PayloadError(
            f"the body nests more than {max_depth} levels of [ and {{ (limits.max_json_depth); "
            "an Alertmanager payload nests 3"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"the body is not JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # an integer of 5000 digits, say
        raise PayloadError(f"the body is not JSON this receiver reads: {exc}") from None


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


def refusals(
    alerts: Iterable[Alert], inventory: InventoryLookup, where: Path
) -> list[dict[str, str]]:
    """One ``{alertname, instance, reason}`` per alert that would roll back something that is
    not one inventory host (a pattern, a group, an unknown name); the inventory is listed only
    when an alert would roll a host back. Raises InventoryError."""
    refused = []
    listed: Inventory | None = None
    for alert in alerts:
        if alert.status != "firing" or alert.labels.get("action") != "rollback":
            continue
        instance = alert.labels.get("instance", "")
        host = host_of_instance(instance)
        if host is None:
            reason = (
                f"instance {instance!r} does not name one inventory host (a name, with an "
                "optional :port; not a pattern, a list or all)"
            )
        else:
            listed = listed or inventory()
            reason = host_refusal(host, listed, where)
        if reason:
            refused.append({"alertname": alert.name, "instance": instance, "reason": reason})
    return refused


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
    rollbacks: Mapping[tuple[str, str], int],
    alerts: Mapping[str, int],
    refused: Mapping[str, int] | None = None,
) -> list[CounterMetricFamily]:
    """The counters as prometheus_client metric families, samples sorted by label.

    Every decision is exported, 0 included, so that ``rate()`` sees the first increase; the
    refusals counter only when ``refused`` is given (then every reason, 0 included).
    """
    runs = CounterMetricFamily(
        "llmfleet_rollbacks",
        "Rollback runs finished, by host and result.",
        labels=["host", "result"],
    )
    for (host, result), count in sorted(rollbacks.items()):
        runs.add_metric([host, result], count)
    decided = counter_by(
        "llmfleet_rollback_alerts",
        "Alerts received, by the receiver's decision.",
        "decision",
        DECISIONS,
        alerts,
    )
    if refused is None:
        return [runs, decided]
    refusals = counter_by(
        "llmfleet_rollback_requests_refused",
        "Requests refused before anything was recorded, by reason.",
        "reason",
        REFUSALS,
        refused,
    )
    return [runs, decided, refusals]


def counter_by(
    name: str, text: str, label: str, known: Iterable[str], counts: Mapping[str, int]
) -> CounterMetricFamily:
    """A counter with one label: a sample for every `known` value (0 where `counts` has
    none) and for any other value `counts` has, sorted by the label."""
    family = CounterMetricFamily(name, text, labels=[label])
    for value in sorted(set(known) | set(counts)):
        family.add_metric([value], counts.get(value, 0))
    return family


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

    A collector rather than prometheus_client's Counter objects: it exports exactly the three
    ``_total`` series (no ``_created`` series, which prometheus_client 0.16 cannot turn off)
    and every decision from the start, 0 included.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rollbacks: Counter[tuple[str, str]] = Counter()
        self._alerts: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Families(self._families))  # type: ignore[arg-type]

    def count_alert(self, decision: str) -> None:
        with self._lock:
            self._alerts[decision] += 1

    def count_rollback(self, host: str, result: str) -> None:
        with self._lock:
            self._rollbacks[(host, result)] += 1

    def count_refused(self, reason: str) -> None:
        with self._lock:
            self._refused[reason] += 1

    def _families(self) -> list[CounterMetricFamily]:
        with self._lock:
            return metric_families(dict(self._rollbacks), dict(self._alerts), dict(self._refused))

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


class Inventory(NamedTuple):
    """The names of an inventory: its hosts and its groups (``all`` and ``ungrouped`` too)."""

    hosts: frozenset[str]
    groups: frozenset[str]


#: Lists the inventory; raises InventoryError.
InventoryLookup = Callable[[], Inventory]


def list_inventory(config: ReceiverConfig, environment: Mapping[str, str]) -> Inventory:
    """The inventory's hosts and groups, from ``ansible-inventory --list``. InventoryError."""
    env = {**os.environ, **environment}
    command = shutil.which("ansible-inventory", path=env.get("PATH"))
    if command is None:
        raise InventoryError("ansible-inventory is not installed next to the receiver")
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
        raise InventoryError(f"ansible-inventory took more than {INVENTORY_TIMEOUT_S} s") from None
    except OSError as exc:
        raise InventoryError(f"ansible-inventory could not run: {exc}") from None
    if listed.returncode != 0:
        raise InventoryError(f"ansible-inventory failed: {listed.stderr.strip()[-500:]}")
    try:
        hosts, groups = inventory_names(json.loads(listed.stdout))
    except (ValueError, AttributeError, TypeError):
        raise InventoryError("ansible-inventory --list did not print a JSON inventory") from None
    return Inventory(frozenset(hosts), frozenset(groups))


def host_refusal(host: str, inventory: Inventory, where: Path) -> str:
    """Why ``host`` must not be the --limit of a run; an empty string when it may be."""
    if host in inventory.groups:
        return f"{host} is a group of the inventory, not a host"
    if host not in inventory.hosts:
        return f"{host} is not a host of the inventory {where}"
    return ""


def check_inventory_host(config: ReceiverConfig, host: str, environment: Mapping[str, str]) -> str:
    """Why ``host`` must not be the --limit of a run (listed now); empty when it may be."""
    try:
        inventory = list_inventory(config, environment)
    except InventoryError as exc:
        return str(exc)
    return host_refusal(host, inventory, config.inventory)


def inventory_stamp(path: Path, limit: int = 10_000) -> tuple[tuple[str, int, int], ...] | None:
    """(file, mtime, size) of every file of an inventory (a file or a folder); None when it
    cannot be read or holds more than ``limit`` files (then nothing is reused)."""
    try:
        if path.is_file():
            stat = path.stat()
            return ((str(path), stat.st_mtime_ns, stat.st_size),)
        stamp = []
        for root, _dirs, files in os.walk(path):
            for name in files:
                stat = (Path(root) / name).stat()
                stamp.append((os.path.join(root, name), stat.st_mtime_ns, stat.st_size))
                if len(stamp) > limit:
                    return None
        return tuple(sorted(stamp))
    except OSError:
        return None


class InventoryCache:
    """An inventory listing reused for ``max_age`` seconds while the inventory's files keep
    their times and sizes; listed again otherwise (a dynamic inventory: at most that old)."""

    def __init__(
        self,
        path: Path,
        max_age: float,
        lister: InventoryLookup,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._max_age = max_age
        self._lister = lister
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[Any, float, Inventory] | None = None

    def __call__(self) -> Inventory:
        stamp = inventory_stamp(self._path)
        with self._lock:
            now = self._clock()
            if self._cached is not None and stamp is not None:
                cached_stamp, listed_at, inventory = self._cached
                if cached_stamp == stamp and now - listed_at < self._max_age:
                    return inventory
            inventory = self._lister()
            self._cached = (stamp, now, inventory)
            return inventory


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
        inventory: InventoryLookup | None = None,
        metrics_token: str | None = None,
    ) -> None:
        self.config = config
        self.token = token
        #: The token GET /metrics takes besides the webhook's (None: the webhook's only).
        self.metrics_token = metrics_token
        self.inventory = inventory or InventoryCache(
            config.inventory,
            config.inventory_cache_seconds,
            lambda: list_inventory(config, ansible_environment(config)),
        )
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
        """Decide on each alert of a payload; log, count, queue rollbacks.

        Raises PayloadError (not a webhook payload), Refused (an alert would roll back
        something that is not one inventory host) or InventoryError (the inventory cannot be
        listed), each before anything is logged, counted as a decision, queued or saved.
        """
        alerts = parse_payload(payload)
        refused = refusals(alerts, self.inventory, self.config.inventory)
        if refused:
            raise Refused(refused)
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

    def count_refused(self, reason: str) -> None:
        self._metrics.count_refused(reason)

    def may_read_metrics(self, header: str | None) -> bool:
        """Whether an Authorization header may read /metrics: the metrics token or the
        webhook's (which may do more)."""
        tokens = [self.token] + ([self.metrics_token] if self.metrics_token else [])
        return any([is_authorized(header, token) for token in tokens])  # both compared

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


class DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read bounded by one total deadline (not a per-read timeout):
    a client that sends a byte a second is cut at the deadline as surely as a silent one."""

    def __init__(self, sock: Any) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = time.monotonic()
        self.what = "the request"
        self.seconds = 0.0
        #: Set when a read hit the deadline: what did not arrive in time, in words.
        self.expired = ""

    def start(self, seconds: float, what: str, since: float | None = None) -> None:
        """From now on, reads end ``seconds`` after ``since`` (default: now)."""
        self._deadline = (time.monotonic() if since is None else since) + seconds
        self.seconds = seconds
        self.what = what
        self.expired = ""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining > 0:
            self._sock.settimeout(remaining)
            try:
                return self._sock.recv_into(buffer)
            except TimeoutError:
                pass
        self.expired = f"{self.what} did not arrive within {self.seconds:g} s"
        raise TimeoutError(self.expired)


def make_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    """The request handler class of ``receiver``'s HTTP interface."""
    config = receiver.config

    class Handler(BaseHTTPRequestHandler):
        server_version = "llmfleet-receiver"
        protocol_version = "HTTP/1.1"
        #: The reader of the request, with its deadlines (set up per connection).
        reader: DeadlineReader

        def setup(self) -> None:
            super().setup()
            self.rfile.close()  # the buffered file over the socket: replaced by one with deadlines
            self.reader = DeadlineReader(self.connection)
            self.rfile = io.BufferedReader(self.reader)

        def handle_one_request(self) -> None:
            self.request_started = time.monotonic()
            self.answered = False
            self.reader.start(config.header_timeout_seconds, "the request line and headers")
            super().handle_one_request()  # http.server closes the connection on a timeout
            if self.reader.expired and not self.answered:
                for name, value in (("request_version", "HTTP/1.1"), ("requestline", "")):
                    if not getattr(self, name, ""):
                        setattr(self, name, value)
                self.command = getattr(self, "command", None) or ""
                with contextlib.suppress(OSError):
                    self._refuse(408, "timeout", f"{self.reader.expired}; the connection is closed")

        def send_response(self, code: int, message: str | None = None) -> None:
            self.connection.settimeout(WRITE_TIMEOUT_S)
            super().send_response(code, message)

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            """http.server's own refusals (a malformed request line, too many headers), as
            JSON like the others."""
            self.close_connection = True
            if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
                self.request_version = "HTTP/1.1"  # a request line that did not parse: answer
            reason = message or HTTPStatus(code).phrase
            self._refuse(code, "bad_request", f"{reason} ({explain})" if explain else reason)

        def _send(self, code: int, body: str, content_type: str = "application/json") -> None:
            data = body.encode("utf-8")
            self.answered = True
            self.close_connection = True  # one request per connection: no idle connection waits
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            if code == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="llmfleet"')
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, code: int, message: str, **extra: Any) -> None:
            self._send(code, json.dumps({"error": message, **extra}) + "\n")

        def _refuse(self, code: int, reason: str, message: str, **extra: Any) -> None:
            receiver.count_refused(reason)
            self._error(code, message, **extra)

        def _unauthorized(self) -> None:
            receiver.log_unauthorized(self.client_address[0], self.path)
            self._refuse(401, "unauthorized", "a valid Authorization: Bearer token is required")

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, "ok\n", "text/plain; charset=utf-8")
            elif self.path == "/metrics":
                if not receiver.may_read_metrics(self.headers.get("Authorization")):
                    self._unauthorized()
                    return
                self._send(200, receiver.metrics_text(), METRICS_CONTENT_TYPE)
            else:
                self._refuse(404, "not_found", f"no {self.path} here (GET /metrics, GET /health)")

        def do_POST(self) -> None:
            if self.path != WEBHOOK_PATH:
                self._refuse(404, "not_found", f"no {self.path} here (POST {WEBHOOK_PATH})")
                return
            if not is_authorized(self.headers.get("Authorization"), receiver.token):
                self._unauthorized()
                return
            length = self._content_length()
            if length is None:
                return
            content_type = (
                self.headers.get_content_type() if "Content-Type" in self.headers else None
            )
            if content_type != "application/json":
                given = self.headers.get("Content-Type")
                self._refuse(
                    415,
                    "unsupported_media_type",
                    f"Content-Type must be application/json, not {given!r}",
                )
                return
            self.reader.start(
                config.request_timeout_seconds, "the request body", since=self.request_started
            )
            try:
                body = self.rfile.read(length)
            except (TimeoutError, OSError) as exc:
                self._refuse(408, "timeout", f"{exc}; the request is dropped")
                return
            if len(body) < length:
                self._refuse(
                    400, "bad_request", f"the body ended after {len(body)} of {length} bytes"
                )
                return
            self._decide(body)

        def _content_length(self) -> int | None:
            """The request's Content-Length; None when it was refused (answered here)."""
            if "Transfer-Encoding" in self.headers:
                given = self.headers["Transfer-Encoding"]
                self._refuse(
                    411,
                    "length_required",
                    f"Transfer-Encoding {given!r} is not taken: send a Content-Length",
                )
                return None
            lengths = set(self.headers.get_all("Content-Length") or [])
            text = next(iter(lengths)) if len(lengths) == 1 else ""
            if not text.isdigit():
                shown = ", ".join(sorted(lengths)) or "missing"
                self._refuse(
                    411, "length_required", f"one Content-Length is required, not {shown!r}"
                )
                return None
            if int(text) > config.max_body_bytes:
                self._refuse(
                    413,
                    "too_large",
                    f"the body of {int(text)} bytes is larger than {config.max_body_bytes} "
                    "bytes (limits.max_body_bytes)",
                )
                return None
            return int(text)

        def _decide(self, body: bytes) -> None:
            try:
                decisions = receiver.handle_payload(parse_body(body, config.max_json_depth))
            except PayloadError as exc:
                self._refuse(400, "bad_request", str(exc))
                return
            except Refused as exc:
                self._refuse(422, "not_a_host", str(exc), refused=exc.refusals)
                return
            except InventoryError as exc:  # Alertmanager retries a 5xx
                self._refuse(503, "inventory_unavailable", f"cannot list the inventory: {exc}")
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
            self._refuse(405, "bad_request", f"{self.command} is not taken: only GET and POST")

        do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_PUT

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


class ReceiverServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once: one more is answered
    503 at once and closed, from the accepting thread, with a short write timeout."""

    daemon_threads = True
    #: The listen backlog: a burst of connections waits to be accepted (and answered 503)
    #: rather than dropped by the kernel (socketserver's default is 5).
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
        on_busy: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(address, handler)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._on_busy = on_busy

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._answer_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _answer_busy(self, request: Any) -> None:
        self._on_busy()
        body = (
            json.dumps(
                {
                    "error": f"busy: {self.max_connections} connections are served already "
                    "(limits.max_connections); try again"
                }
            )
            + "\n"
        ).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            request.settimeout(1.0)
            request.sendall(head + body)
        except OSError:
            pass


def make_server(receiver: Receiver, address: str, port: int) -> ReceiverServer:
    return ReceiverServer(
        (address, port),
        make_handler(receiver),
        receiver.config.max_connections,
        on_busy=lambda: receiver.count_refused("busy"),
    )


def serve(config: ReceiverConfig, run: RunFunction | None = None) -> int:
    """Run the receiver until SIGTERM or SIGINT; the running rollback is finished first."""
    token = read_token(config.token_file)
    metrics_token = (
        read_token(config.metrics_token_file) if config.metrics_token_file is not None else None
    )
    runner = run if run is not None else (lambda request: run_rollback(config, request))
    receiver = Receiver(config, token, runner, metrics_token=metrics_token)
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
