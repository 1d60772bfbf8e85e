"""`llmfleet report --prometheus`: the read-only queries, against a fake Prometheus on loopback
that asks for basic auth as the monitoring role's does."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from browser.report_inputs import prometheus_snapshot
from helpers import PROXY_VARIABLES, QuietHandler, http_on_loopback

from llmfleet.report_prometheus import QUERIES, check_url, fetch, parse_answer

USER, PASSWORD = "llmfleet-metrics", "s3cret-pw"


@dataclass
class FakePrometheus:
    """Answers /api/v1/query from `vectors` (query -> result), or `failing` (query ->
    (status, body)); records each query and the Authorization header it came with."""

    vectors: dict[str, list[Any]] = field(default_factory=dict)
    failing: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@contextlib.contextmanager
def serve(fake: FakePrometheus) -> Iterator[FakePrometheus]:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query).get("query", [""])[0]
            authorization = self.headers.get("Authorization")
            fake.seen.append((query, authorization))
            if authorization != expected:
                self.answer(401, b"Unauthorized\n")
            elif parts.path != "/api/v1/query":
                self.answer(404, b"404 page not found\n")
            elif query in fake.failing:
                self.answer(*fake.failing[query])
            else:
                result = fake.vectors.get(query, [])
                data = {"resultType": "vector", "result": result}
                self.answer(200, json.dumps({"status": "success", "data": data}).encode())

        def answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with http_on_loopback(Handler) as fake.url:
        yield fake


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample_vectors() -> dict[str, list[Any]]:
    series = prometheus_snapshot()["series"]
    return {QUERIES[name]: result for name, result in series.items()}


def test_fetch_reads_every_query_with_basic_auth() -> None:
    with serve(FakePrometheus(vectors=sample_vectors())) as fake:
        snapshot = fetch(fake.url + "/", user=USER, password=PASSWORD)
    assert snapshot["error"] is None and snapshot["errors"] == {}
    assert snapshot["url"] == fake.url
    assert snapshot["series"] == prometheus_snapshot()["series"]
    assert [query for query, _ in fake.seen] == list(QUERIES.values())
    assert all(auth and auth.startswith("Basic ") for _, auth in fake.seen)


def test_refused_credentials_stop_at_the_first_query() -> None:
    with serve(FakePrometheus(vectors=sample_vectors())) as fake:
        wrong = fetch(fake.url, user=USER, password="wrong")
        none = fetch(fake.url)
    assert (
        wrong["error"]
        == f"Prometheus at {fake.url} answered HTTP 401: the user or password is wrong"
    )
    assert none["error"] == (
        f"Prometheus at {fake.url} answered HTTP 401: give --prometheus-user and "
        "--prometheus-password-file"
    )
    assert wrong["series"] == {} and len(fake.seen) == 2  # one query each, then it stopped
    assert PASSWORD not in json.dumps([wrong, none])


def test_an_unreachable_prometheus_is_an_error_not_an_exception() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    snapshot = fetch(url, user=USER, password=PASSWORD, timeout=2)
    assert snapshot["error"].startswith(f"cannot reach Prometheus at {url}: ")
    assert snapshot["series"] == {}


def test_one_failing_query_leaves_the_others() -> None:
    failing = {
        QUERIES["fb_used"]: (400, b'{"status":"error","errorType":"bad_data","error":"parse"}'),
        QUERIES["up"]: (200, b"<html>a proxy's page</html>"),
    }
    with serve(FakePrometheus(vectors=sample_vectors(), failing=failing)) as fake:
        snapshot = fetch(fake.url, user=USER, password=PASSWORD)
    assert snapshot["error"] is None
    assert sorted(snapshot["series"]) == ["alerts", "fb_free"]
    assert snapshot["errors"]["fb_used"] == "DCGM_FI_DEV_FB_USED: HTTP 400: parse"
    assert snapshot["errors"]["up"].startswith('up{job="llmfleet-engine"}: HTTP 200, not JSON')


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, b"[]", "HTTP 200, not a Prometheus answer"),
        (200, b'{"status":"success","data":{"resultType":"matrix","result":[]}}', "not an instant"),
        (200, b'{"status":"success","data":{"resultType":"vector"}}', "the vector has no result"),
        (503, b'{"status":"error","error":"busy"}', "HTTP 503: busy"),
    ],
)
def test_answers_that_are_not_a_vector(status: int, body: bytes, reason: str) -> None:
    result, error = parse_answer(status, body)
    assert result is None and error is not None and reason in error


@pytest.mark.parametrize(
    "url", ["prometheus:9090", "ftp://mon:9090", "http://", "http://mon:9090/?x=1"]
)
def test_urls_that_are_not_a_base_url(url: str) -> None:
    with pytest.raises(ValueError, match="--prometheus"):
        check_url(url)
