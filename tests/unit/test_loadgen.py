"""llmfleet load: the balancer's rule (no request to an endpoint whose /health says no),
the bounds, and the report, against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmfleet.bench import RequestResult
from llmfleet.loadgen import LoadConfig, Outcome, health_url, is_healthy, run_load, summarize


class _Endpoint(BaseHTTPRequestHandler):
    healthy = True
    chats = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200 if type(self).healthy else 503)
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).chats += 1
        answer = {"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": 1}}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def endpoint() -> tuple[str, type[_Endpoint]]:
    handler = type("Handler", (_Endpoint,), {"healthy": True, "chats": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def test_health_url_keeps_scheme_and_port() -> None:
    assert health_url("http://10.0.0.5:8080/v1") == "http://10.0.0.5:8080/health"
    with pytest.raises(ValueError, match="http"):
        health_url("10.0.0.5:8080")


def test_sends_real_completions_until_the_budget(endpoint) -> None:
    url, handler = endpoint
    report = run_load(LoadConfig(endpoints=(url,), concurrency=2, max_requests=7))
    assert (report["sent"], report["succeeded"], report["failed"]) == (7, 7, 0)
    assert handler.chats == 7


def test_sends_nothing_to_a_drained_endpoint(endpoint) -> None:
    url, handler = endpoint
    handler.healthy = False
    assert not is_healthy(url, 1.0)
    report = run_load(LoadConfig(endpoints=(url,), max_requests=5, duration_s=1.2))
    assert report["sent"] == 0 and handler.chats == 0
    assert report["health_skips"] >= 2


def test_stops_when_the_stop_file_appears(endpoint, tmp_path: Path) -> None:
    url, _ = endpoint
    stop = tmp_path / "stop"
    stop.touch()
    report = run_load(LoadConfig(endpoints=(url,), stop_file=stop))
    assert report["sent"] == 0


def test_a_refused_connection_is_a_failure() -> None:
    def send(_: str, __: LoadConfig) -> RequestResult:
        return RequestResult(ok=False, status=None, error="connection refused")

    report = run_load(
        LoadConfig(endpoints=("http://127.0.0.1:9",), max_requests=3),
        send=send,
        healthy=lambda *_: True,
    )
    assert report["failed"] == 3
    assert report["failures"][0]["error"] == "connection refused"


def test_summarize_counts_per_endpoint() -> None:
    outcomes = [
        Outcome("http://a", 0.1, True, 200, 0.2, None),
        Outcome("http://b", 0.3, False, 502, None, "HTTP 502"),
        Outcome("http://b", 0.2, True, 200, 0.2, None),
    ]
    report = summarize(outcomes, Counter({"http://a": 4}), ["http://a", "http://b"], 1.0)
    assert report["endpoints"]["http://a"] == {
        "sent": 1,
        "succeeded": 1,
        "failed": 0,
        "health_skips": 4,
    }
    assert report["endpoints"]["http://b"]["failed"] == 1
    assert report["failures"] == [
        {"endpoint": "http://b", "at_s": 0.3, "status": 502, "error": "HTTP 502"}
    ]
