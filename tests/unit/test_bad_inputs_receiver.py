"""Bad input to the rollback receiver: every request it refuses, and every slow client.

Each case runs the real HTTP server on 127.0.0.1 (an ephemeral port) with small limits and
asserts three things: the answer is a 4xx (or a 503) with a JSON `error` that names the
input, nothing was recorded (no cool-down state, no log line but the `unauthorized` audit
line, no decision counted, no rollback queued), and the server is back to its own threads
after a slow client is cut. Slow clients are cut by the configured deadlines; the tests wait
for that with deadlines ten times longer, never as speed targets.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ServedReceiver, prometheus_samples, receiver_on_loopback

from llmfleet import rollback_receiver as rr

TOKEN = "bad-input-token-0123456789"
METRICS_TOKEN = "metrics-only-token-42"
HEADER_TIMEOUT = 0.5
REQUEST_TIMEOUT = 1.0
MAX_CONNECTIONS = 4
MAX_BODY = 8192
#: How long a test waits for what a deadline must bring: a generous multiple of it.
PATIENCE = 10 * REQUEST_TIMEOUT
INVENTORY = rr.Inventory(
    hosts=frozenset({"gpu01", "gpu02"}), groups=frozenset({"all", "ungrouped", "gpus"})
)


def alert(instance: str = "gpu01:9100", status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "EngineDown", "instance": instance, "action": "rollback", **labels},
        "annotations": {},
        "startsAt": "2026-05-01T10:00:00Z",
        "fingerprint": "f00d",
    }


def payload(*alerts: dict[str, Any]) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "alerts": list(alerts)}).encode()


class Runs:
    """The injected run function: it records, it never runs ansible."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def __call__(self, request: rr.RollbackRequest) -> rr.RunOutcome:
        self.hosts.append(request.host)
        return rr.RunOutcome("successful", 0, 0.01)


class Served(ServedReceiver):
    timeout = PATIENCE

    def __init__(self, receiver: rr.Receiver, port: int, runs: Runs) -> None:
        super().__init__(receiver, port)
        self.runs = runs
        self.config = receiver.config

    def answer(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """A request's status and its JSON answer (every answer of the receiver is JSON)."""
        status, data, response = self.request(method, path, body, headers)
        assert response.getheader("Content-Type") == "application/json", data
        return status, json.loads(data)

    def post(self, body: bytes, **headers: str) -> tuple[int, dict[str, Any]]:
        sent = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        sent.update({name.replace("_", "-"): value for name, value in headers.items()})
        return self.answer("POST", "/alertmanager", body, {k: v for k, v in sent.items() if v})

    def raw(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE)

    def counters(self) -> dict[str, float]:
        return prometheus_samples(self.receiver.metrics_text())

    def recorded(self) -> dict[str, Any]:
        """Everything a request may leave behind, to compare before and after."""
        log = self.config.log_file
        counters = self.counters()
        return {
            "state": sorted(p.name for p in self.config.state_dir.iterdir())
            if self.config.state_dir.exists()
            else [],
            "log": log.read_text().splitlines() if log.exists() else [],
            "runs": list(self.runs.hosts),
            "decisions": {k: v for k, v in counters.items() if "rollback_alerts" in k},
            "rollbacks": {k: v for k, v in counters.items() if "rollbacks_total" in k},
        }


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = rr.ReceiverConfig(
        token_file=tmp_path / "token",
        playbook=tmp_path / "rollback.yml",
        inventory=tmp_path / "hosts.yml",
        state_dir=tmp_path / "state",
        log_file=tmp_path / "log" / "actions.jsonl",
        port=0,
        header_timeout_seconds=HEADER_TIMEOUT,
        request_timeout_seconds=REQUEST_TIMEOUT,
        max_connections=MAX_CONNECTIONS,
        max_body_bytes=MAX_BODY,
    )
    runs = Runs()
    receiver = rr.Receiver(
        config, TOKEN, runs, inventory=lambda: INVENTORY, metrics_token=METRICS_TOKEN
    )
    with receiver_on_loopback(receiver) as port:
        yield Served(receiver, port, runs)


def assert_nothing_recorded(served: Served, before: dict[str, Any]) -> None:
    assert served.receiver.wait_idle(PATIENCE)
    assert served.recorded() == before
    assert not served.config.state_dir.joinpath(rr.STATE_FILE).exists()


def refused(served: Served, reason: str) -> float:
    return served.counters()[f'llmfleet_rollback_requests_refused_total{{reason="{reason}"}}']


# -- requests the receiver refuses, answered at once -------------------------------------------

NESTED = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = (b'{"a":' * 17) + b"1" + (b"}" * 17)

#: (case, method, path, body, headers: None drops the default, expected status, reason label,
#: words the JSON error must hold)
REFUSED = [
    ("no token", "POST", "/alertmanager", payload(alert()), {"Authorization": None}, 401,
     "unauthorized", "Authorization: Bearer"),
    ("wrong token", "POST", "/alertmanager", payload(alert()),
     {"Authorization": "Bearer not-the-token"}, 401, "unauthorized", "Bearer token"),
    ("basic auth", "POST", "/alertmanager", payload(alert()),
     {"Authorization": f"Basic {TOKEN}"}, 401, "unauthorized", "Bearer token"),
    ("metrics token on the webhook", "POST", "/alertmanager", payload(alert()),
     {"Authorization": f"Bearer {METRICS_TOKEN}"}, 401, "unauthorized", "Bearer token"),
    ("not JSON", "POST", "/alertmanager", b"{not json", {}, 400, "bad_request",
     "the body is not JSON"),
    ("not UTF-8", "POST", "/alertmanager", b'{"version": "\xff"}', {}, 400, "bad_request",
     "not UTF-8 text (byte 13)"),
    ("deeply nested arrays", "POST", "/alertmanager", NESTED[:2048] + NESTED[-2048:], {}, 400,
     "bad_request", "nests more than 16 levels"),
    ("17 nested objects", "POST", "/alertmanager", DEEP_OBJECT, {}, 400, "bad_request",
     "nests more than 16 levels"),
    ("an integer of 5000 digits", "POST", "/alertmanager", b'{"version": ' + b"9" * 5000 + b"}",
     {"Content-Type": "application/json"}, 400, "bad_request", "not JSON this receiver reads"),
    ("a JSON list", "POST", "/alertmanager", b"[1, 2]", {}, 400, "bad_request",
     "the payload must be a JSON object"),
    ("webhook version 3", "POST", "/alertmanager", b'{"version": "3", "alerts": []}', {}, 400,
     "bad_request", "version '3' is not supported"),
    ("alerts not a list", "POST", "/alertmanager", b'{"version": "4", "alerts": {}}', {}, 400,
     "bad_request", "no list 'alerts'"),
    ("labels not an object", "POST", "/alertmanager",
     b'{"version": "4", "alerts": [{"labels": 7}]}', {}, 400, "bad_request",
     "alerts[0].labels must be an object"),
    ("text/plain", "POST", "/alertmanager", payload(alert()), {"Content-Type": "text/plain"},
     415, "unsupported_media_type", "not 'text/plain'"),
    ("form data", "POST", "/alertmanager", payload(alert()),
     {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type",
     "'application/x-www-form-urlencoded'"),
    ("no content type", "POST", "/alertmanager", payload(alert()), {"Content-Type": None}, 415,
     "unsupported_media_type", "not None"),
    ("oversized body", "POST", "/alertmanager", b"x" * (MAX_BODY + 1), {}, 413, "too_large",
     f"{MAX_BODY + 1} bytes is larger than {MAX_BODY} bytes"),
    ("unknown host", "POST", "/alertmanager", payload(alert("gpu99:9100")), {}, 422,
     "not_a_host", "gpu99 is not a host of the inventory"),
    ("group name", "POST", "/alertmanager", payload(alert("gpus:9100")), {}, 422, "not_a_host",
     "gpus is a group of the inventory, not a host"),
    ("pattern all", "POST", "/alertmanager", payload(alert("all")), {}, 422, "not_a_host",
     "instance 'all' does not name one inventory host"),
    ("pattern *", "POST", "/alertmanager", payload(alert("gpu*")), {}, 422, "not_a_host",
     "instance 'gpu*' does not name one inventory host"),
    ("pattern a:b", "POST", "/alertmanager", payload(alert("gpu01:gpu02")), {}, 422,
     "not_a_host", "instance 'gpu01:gpu02' does not name one inventory host"),
    ("a list of hosts", "POST", "/alertmanager", payload(alert("gpu01,gpu02")), {}, 422,
     "not_a_host", "instance 'gpu01,gpu02'"),
    ("a good host and a group", "POST", "/alertmanager", payload(alert("gpu01"), alert("all")),
     {}, 422, "not_a_host", "instance 'all'"),
    ("metrics without token", "GET", "/metrics", None, {"Authorization": None}, 401,
     "unauthorized", "Authorization: Bearer"),
    ("metrics with a wrong token", "GET", "/metrics", None,
     {"Authorization": "Bearer nope"}, 401, "unauthorized", "Bearer token"),
    ("another path", "POST", "/alertmanager/../admin", payload(alert()), {}, 404, "not_found",
     "no /alertmanager/../admin here"),
    ("PUT", "PUT", "/alertmanager", payload(alert()), {}, 405, "bad_request",
     "PUT is not taken"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "reason", "words"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_a_refused_request_names_the_input_and_records_nothing(
    served: Served,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str | None],
    status: int,
    reason: str,
    words: str,
) -> None:
    before = served.recorded()
    sent: dict[str, str | None] = {"Authorization": f"Bearer {TOKEN}"}
    if body is not None:
        sent["Content-Type"] = "application/json"
    sent.update(headers)
    answer_status, answer = served.answer(
        method, path, body, {k: v for k, v in sent.items() if v is not None}
    )
    assert answer_status == status, answer
    assert words in answer["error"]
    assert refused(served, reason) == 1
    after = served.recorded()
    if reason == "unauthorized":  # the audit line, and nothing else
        [line] = after.pop("log")[len(before["log"]) :]
        assert json.loads(line)["event"] == "unauthorized"
        assert json.loads(line)["path"] == path
        before = {**before}
        before.pop("log")
        assert {k: v for k, v in after.items()} == before
    else:
        assert_nothing_recorded(served, before)


def test_the_refusal_lists_each_alert_it_will_not_act_on(served: Served) -> None:
    status, answer = served.post(payload(alert("gpu01"), alert("gpus:9100"), alert("x*")))
    assert status == 422
    assert answer["refused"] == [
        {
            "alertname": "EngineDown",
            "instance": "gpus:9100",
            "reason": "gpus is a group of the inventory, not a host",
        },
        {
            "alertname": "EngineDown",
            "instance": "x*",
            "reason": "instance 'x*' does not name one inventory host (a name, with an "
            "optional :port; not a pattern, a list or all)",
        },
    ]
    assert served.runs.hosts == []


def test_resolved_alerts_only_start_nothing(served: Served) -> None:
    """A resolved notification is Alertmanager's normal traffic: 200, and nothing runs."""
    status, answer = served.post(
        payload(alert("gpu01", status="resolved"), alert("all", "resolved"))
    )
    assert status == 200
    assert [d["decision"] for d in answer["decisions"]] == ["ignored_resolved"] * 2
    assert served.receiver.wait_idle(PATIENCE)
    assert served.runs.hosts == []
    assert not served.config.state_dir.joinpath(rr.STATE_FILE).exists()


def test_the_inventory_cannot_be_listed_503_and_nothing_recorded(served: Served) -> None:
    def broken() -> rr.Inventory:
        raise rr.InventoryError("ansible-inventory failed: ERROR! hosts.yml: bad YAML")

    served.receiver.inventory = broken
    before = served.recorded()
    status, answer = served.post(payload(alert("gpu01")))
    assert status == 503
    assert (
        "cannot list the inventory: ansible-inventory failed: ERROR! hosts.yml" in answer["error"]
    )
    assert_nothing_recorded(served, before)


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"Content-Length": None, "Transfer-Encoding": "chunked"}, "'chunked' is not taken"),
        ({"Content-Length": "12, 12"}, "one Content-Length is required, not '12, 12'"),
    ],
    ids=["chunked", "two lengths"],
)
def test_a_body_without_one_plain_length_is_refused(
    served: Served, headers: dict[str, str | None], words: str
) -> None:
    before = served.recorded()
    with served.raw() as client:
        lines = [
            "POST /alertmanager HTTP/1.1",
            "Host: x",
            f"Authorization: Bearer {TOKEN}",
            "Content-Type: application/json",
            *(f"{name}: {value}" for name, value in headers.items() if value),
            "",
            "",
        ]
        client.sendall("\r\n".join(lines).encode() + b"c\r\n{}\r\n0\r\n\r\n")
        status, answer = read_answer(client)
    assert status == 411
    assert words in answer["error"]
    assert_nothing_recorded(served, before)


def test_a_malformed_request_line_is_answered_in_json(served: Served) -> None:
    before = served.recorded()
    with served.raw() as client:
        client.sendall(b"POST /alertmanager HTTP/9.9 extra\r\n\r\n")
        status, answer = read_answer(client)
    assert status == 400
    assert "Bad request version" in answer["error"] or "Bad request syntax" in answer["error"]
    assert_nothing_recorded(served, before)


# -- slow clients: cut by the total deadlines --------------------------------------------------


def read_answer(client: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of one answer on a raw socket (the server then closes)."""
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def send_slowly(client: socket.socket, data: bytes, pause: float, begun: float) -> None:
    """`data` a byte at a time, `pause` s apart, until all is sent, the server closes the
    connection, or PATIENCE has passed since `begun`."""
    with contextlib.suppress(OSError):
        for byte in data:
            client.sendall(bytes([byte]))
            time.sleep(pause)
            if time.monotonic() - begun > PATIENCE:
                break


def handler_threads() -> int:
    """Threads the server started for connections (its own loop and worker aside)."""
    return sum(1 for t in threading.enumerate() if "process_request_thread" in t.name)


def wait_for(condition: Callable[[], bool], seconds: float = PATIENCE) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_silent_client_is_cut_after_the_header_deadline(served: Served) -> None:
    before = served.recorded()
    with served.raw() as client:
        begun = time.monotonic()
        status, answer = read_answer(client)
        waited = time.monotonic() - begun
    assert status == 408
    assert answer["error"] == (
        f"the request line and headers did not arrive within {HEADER_TIMEOUT:g} s; "
        "the connection is closed"
    )
    assert HEADER_TIMEOUT * 0.9 <= waited < PATIENCE
    assert wait_for(lambda: handler_threads() == 0)
    assert refused(served, "timeout") == 1
    assert_nothing_recorded(served, before)


def test_headers_sent_a_byte_at_a_time_are_cut_at_the_total_deadline(served: Served) -> None:
    """A per-read timeout would wait forever: every byte comes before it runs out."""
    before = served.recorded()
    request = b"POST /alertmanager HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000
    with served.raw() as client:
        begun = time.monotonic()
        send_slowly(client, request, HEADER_TIMEOUT / 10, begun)
        status, answer = read_answer(client)
        waited = time.monotonic() - begun
    assert status == 408
    assert "the request line and headers did not arrive within 0.5 s" in answer["error"]
    assert waited < PATIENCE
    assert wait_for(lambda: handler_threads() == 0)
    assert_nothing_recorded(served, before)


@pytest.mark.parametrize("drip", [False, True], ids=["stalled body", "body a byte at a time"])
def test_a_slow_body_is_cut_at_the_request_deadline(served: Served, drip: bool) -> None:
    before = served.recorded()
    body = payload(alert("gpu01"))
    head = (
        "POST /alertmanager HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with served.raw() as client:
        begun = time.monotonic()
        client.sendall(head + body[:10])
        send_slowly(client, body[10:-1] if drip else b"", REQUEST_TIMEOUT / 20, begun)
        status, answer = read_answer(client)
        waited = time.monotonic() - begun
    assert status == 408
    assert answer["error"] == (
        f"the request body did not arrive within {REQUEST_TIMEOUT:g} s; the request is dropped"
    )
    assert waited < PATIENCE
    assert wait_for(lambda: handler_threads() == 0)
    assert_nothing_recorded(served, before)


def test_connections_beyond_the_limit_are_answered_busy_and_all_are_cut(served: Served) -> None:
    """300 slow-header connections held 302 threads: now at most MAX_CONNECTIONS threads."""
    before = served.recorded()
    slow = [served.raw() for _ in range(MAX_CONNECTIONS)]
    try:
        assert wait_for(lambda: handler_threads() == MAX_CONNECTIONS)
        extra = [served.raw() for _ in range(3 * MAX_CONNECTIONS)]  # a burst, all at once
        answers = []
        for client in extra:
            with client:
                answers.append(read_answer(client))
        assert handler_threads() <= MAX_CONNECTIONS
    finally:
        for client in slow:
            client.close()
    assert {status for status, _ in answers} == {503}
    assert answers[0][1]["error"] == (
        f"busy: {MAX_CONNECTIONS} connections are served already (limits.max_connections); "
        "try again"
    )
    assert wait_for(lambda: handler_threads() == 0), "the slow connections were never cut"
    assert refused(served, "busy") == 3 * MAX_CONNECTIONS
    # and the receiver still answers
    status, _ = served.post(payload(alert("gpu01", status="resolved")))
    assert status == 200
    assert served.recorded()["state"] == before["state"]


# -- the metrics token ---------------------------------------------------------------------------


def test_metrics_take_the_metrics_token_or_the_webhook_token(served: Served) -> None:
    for token in (METRICS_TOKEN, TOKEN):
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=PATIENCE)
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        assert response.status == 200
        assert b"llmfleet_rollback_alerts_total" in response.read()
        connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=PATIENCE)
    connection.request("GET", "/health")
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"ok\n"), "/health needs no token"
    connection.close()
