"""`llmfleet bench` against a fake OpenAI-compatible streaming server on 127.0.0.1.

The fake server streams chat completion chunks the way llama-server does
(chunked SSE, ``data: {json}`` events, ``usage`` and ``timings`` in the last
chunk, then ``data: [DONE]``), records every request and the most requests it
held at once, and can demand an API key, fail some requests, or misbehave.
"""

from __future__ import annotations

import json
import random
import re
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmfleet.bench import (
    BenchConfig,
    LevelRun,
    RequestResult,
    StreamError,
    chat_url,
    format_report,
    parse_concurrency,
    percentile,
    read_stream,
    run_benchmark,
    run_level,
    send_request,
    summarize_level,
)
from llmfleet.cli import main

MODEL = "qwen2.5-7b-instruct-q4_k_m.gguf"
KEY = "sk-test-9f8e7d6c5b4a"


@dataclass
class FakeState:
    """How the fake server behaves, and what it saw."""

    mode: str = "ok"  # ok | no_usage | usage_only | malformed | no_done | stall
    key: str | None = None  # demand "Authorization: Bearer <key>"
    fail_every: int = 0  # answer 500 to every n-th request
    chunks: int = 4  # content chunks per completion
    delay: float = 0.004  # seconds before each chunk
    predicted_n: int = 7  # timings.predicted_n (differs from chunks on purpose)
    usage_tokens: int = 6  # usage.completion_tokens
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    count: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    authorizations: list[str | None] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def reset_counters(self) -> None:
        with self.lock:
            self.count = self.max_in_flight = 0
            self.authorizations.clear()
            self.bodies.clear()


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event: a data line and the blank line that ends it."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def lines(*events: bytes) -> list[bytes]:
    """Events as the lines a client reads one by one."""
    return b"".join(events).splitlines(keepends=True)


def chunk(content: str | None = None, role: str | None = None, **extra: Any) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    finish = extra.pop("finish_reason", None)
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _leave(self) -> None:
        """Out of the in-flight count, before the last write lets the client go on."""
        if self._in_flight:
            self._in_flight = False
            with self.server.state.lock:
                self.server.state.in_flight -= 1

    def _json(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self._leave()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:
        state = self.server.state
        self.close_connection = True
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        authorization = self.headers.get("Authorization")
        with state.lock:
            state.count += 1
            number = state.count
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            state.authorizations.append(authorization)
            state.bodies.append(body)
        self._in_flight = True
        try:
            if self.path != "/v1/chat/completions":
                self._json(404, {"error": {"code": 404, "message": "File Not Found"}})
            elif state.key and authorization != f"Bearer {state.key}":
                # A careless server that echoes the header: the key must still not leak.
                message = f"Invalid API Key ({authorization})"
                self._json(401, {"error": {"code": 401, "message": message}})
            elif state.fail_every and number % state.fail_every == 0:
                self._json(500, {"error": {"code": 500, "message": "slot unavailable"}})
            else:
                self._stream(state)
        finally:
            self._leave()

    def _stream(self, state: FakeState) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk(b": keep-alive comment\n\n" + sse(chunk(role="assistant", content="")))
        for index in range(state.chunks):
            time.sleep(state.delay)
            if state.mode == "malformed" and index == 1:
                self._chunk(b"data: {not json\n\n")
                return self._chunk(b"")
            if state.mode == "stall" and index == 1:
                state.release.wait(5)
                return None
            self._chunk(sse(chunk(content=f"tok{index} ")))
        last: dict[str, Any] = {"finish_reason": "length"}
        if state.mode in ("ok", "usage_only"):
            last["usage"] = {
                "completion_tokens": state.usage_tokens,
                "prompt_tokens": 12,
                "total_tokens": 12 + state.usage_tokens,
            }
        if state.mode == "ok":
            last["timings"] = {
                "prompt_n": 12,
                "predicted_n": state.predicted_n,
                "predicted_per_second": 250.0,
            }
        self._leave()
        self._chunk(sse(chunk(**last)))
        if state.mode != "no_done":
            self._chunk(sse("[DONE]"))
        self._chunk(b"")
        return None


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FakeState) -> None:
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.state = state

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer(FakeState())
    thread = threading.Thread(target=fake.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield fake
    finally:
        fake.state.release.set()
        fake.shutdown()
        fake.server_close()
        thread.join(2)


def config(server: FakeServer, **overrides: Any) -> BenchConfig:
    settings: dict[str, Any] = {
        "endpoint": server.endpoint,
        "concurrency": (1,),
        "requests": 3,
        "timeout_s": 5.0,
        "time_limit_s": 5.0,
    }
    settings.update(overrides)
    return BenchConfig(**settings)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- statistics ------------------------------------------------------------------------------------


def test_percentile_linear_interpolation() -> None:
    values = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]  # unsorted on purpose
    assert percentile(values, 0) == 1
    assert percentile(values, 100) == 10
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 99) == pytest.approx(9.91)  # rank 8.91: 9 + 0.91 * (10 - 9)
    assert percentile(values, 25) == pytest.approx(3.25)
    assert percentile([4.2], 99) == 4.2
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_percentile_matches_statistics_inclusive_method() -> None:
    sample = [random.Random(seed).expovariate(2) for seed in range(37)]
    cut_points = statistics.quantiles(sample, n=100, method="inclusive")
    for p in range(1, 100):
        assert percentile(sample, p) == pytest.approx(cut_points[p - 1])


def test_summarize_level_figures() -> None:
    results = [
        RequestResult(ok=True, status=200, latency_s=lat, ttft_s=lat / 4, completion_tokens=10)
        for lat in (0.1, 0.2, 0.3, 0.4)
    ]
    results += [RequestResult(ok=False, status=500, error="HTTP 500: boom")] * 2
    results += [RequestResult(ok=False, error="connection refused")]
    summary = summarize_level(LevelRun(2, results, wall_s=0.5, stopped_by="count"))
    assert (summary["requests"], summary["succeeded"], summary["failed"]) == (7, 4, 3)
    assert summary["latency_s"]["p50"] == pytest.approx(0.25)
    assert summary["latency_s"]["p99"] == pytest.approx(0.397)
    assert summary["ttft_s"]["p50"] == pytest.approx(0.0625)
    assert summary["completion_tokens"] == 40
    assert summary["tokens_per_s"]["aggregate"] == pytest.approx(80.0)  # 40 tokens / 0.5 s
    expected_mean = statistics.fmean([100, 50, 100 / 3, 25])  # tokens / latency, per request
    assert summary["tokens_per_s"]["mean"] == pytest.approx(expected_mean, abs=0.01)
    assert summary["requests_per_s"] == pytest.approx(8.0)  # 4 succeeded / 0.5 s
    assert summary["errors"] == [
        {"reason": "HTTP 500: boom", "count": 2},
        {"reason": "connection refused", "count": 1},
    ]


def test_summarize_level_keeps_the_first_few_reasons() -> None:
    results = [RequestResult(ok=False, error=f"reason {n}") for n in range(8)]
    summary = summarize_level(LevelRun(1, results, wall_s=1.0, stopped_by="count"))
    assert len(summary["errors"]) == 5
    assert summary["errors_left_out"] == 3
    assert summary["latency_s"]["p50"] is None
    assert summary["tokens_per_s"]["aggregate"] is None


# -- the stream and the options -------------------------------------------------------------


def test_read_stream_prefers_timings_then_usage_then_chunks() -> None:
    events = [
        sse(chunk(role="assistant", content="")),  # no content yet: not the first token
        sse(chunk(content="Hello")),
        sse(chunk(content=" world")),
    ]
    first: list[int] = []
    final = sse(chunk(usage={"completion_tokens": 5}, timings={"predicted_n": 9}))
    summary = read_stream(
        lines(*events, final, b"data: [DONE]\n"), on_first_token=lambda: first.append(1)
    )
    assert first == [1]
    assert (summary.completion_tokens, summary.token_source, summary.model) == (9, "timings", MODEL)
    summary = read_stream(lines(*events, sse(chunk(usage={"completion_tokens": 5})), sse("[DONE]")))
    assert (summary.completion_tokens, summary.token_source) == (5, "usage")
    summary = read_stream(lines(*events, sse("[DONE]")))
    assert (summary.completion_tokens, summary.token_source) == (2, "chunks")


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        ([b"data: {oops\n", b"\n"], "not JSON"),
        (lines(sse(chunk(content="a"))), "ended before data: [DONE]"),
        (lines(sse({"error": {"code": 500, "message": "context full"}})), "context full"),
    ],
)
def test_read_stream_rejects_bad_streams(stream: list[bytes], message: str) -> None:
    with pytest.raises(StreamError, match=re.escape(message)):
        read_stream(stream)


def test_chat_url_and_concurrency_parsing() -> None:
    assert chat_url("http://10.0.0.5:8080") == "http://10.0.0.5:8080/v1/chat/completions"
    assert chat_url("10.0.0.5:8080/v1/") == "http://10.0.0.5:8080/v1/chat/completions"
    assert chat_url("https://h/v1/chat/completions") == "https://h/v1/chat/completions"
    with pytest.raises(ValueError):
        chat_url("ftp://h")
    assert parse_concurrency("1,4, 8") == (1, 4, 8)
    for bad in ("", "0", "a,b", "2,-1"):
        with pytest.raises(ValueError):
            parse_concurrency(bad)


# -- against the fake server -----------------------------------------------------------------------


def test_one_request_measures_ttft_latency_and_tokens(server: FakeServer) -> None:
    result = send_request(config(server))
    assert result.ok, result.error
    assert result.status == 200
    assert result.ttft_s is not None and result.latency_s is not None
    # The first content chunk comes after one delay, the end after four.
    assert 0 < result.ttft_s < result.latency_s
    assert result.latency_s - result.ttft_s >= 3 * server.state.delay * 0.9
    assert (result.completion_tokens, result.token_source) == (7, "timings")
    assert result.tokens_per_s == pytest.approx(7 / result.latency_s)
    assert result.model == MODEL
    body = server.state.bodies[0]
    assert body["stream"] is True and body["temperature"] == 0 and body["max_tokens"] == 64
    assert body["stream_options"] == {"include_usage": True}
    assert server.state.authorizations == [None]


@pytest.mark.parametrize(
    ("mode", "tokens", "source"), [("usage_only", 6, "usage"), ("no_usage", 4, "chunks")]
)
def test_token_count_without_timings(
    server: FakeServer, mode: str, tokens: int, source: str
) -> None:
    server.state.mode = mode
    result = send_request(config(server))
    assert (result.ok, result.completion_tokens, result.token_source) == (True, tokens, source)


def test_concurrency_runs_n_requests_at_once(server: FakeServer) -> None:
    server.state.delay = 0.01
    level = run_level(config(server, requests=8), 4)
    assert len(level.results) == 8 and all(r.ok for r in level.results)
    assert server.state.count == 8
    assert server.state.max_in_flight == 4
    server.state.reset_counters()
    level = run_level(config(server, requests=3), 1)
    assert server.state.count == 3
    assert server.state.max_in_flight == 1


def test_benchmark_warms_up_then_runs_each_level(server: FakeServer) -> None:
    document = run_benchmark(config(server, concurrency=(1, 3), requests=5))
    assert server.state.count == 1 + 5 + 5  # the warm-up is sent, not counted
    assert document["warmup"]["ok"] is True
    assert [level["requests"] for level in document["levels"]] == [5, 5]
    assert [level["concurrency"] for level in document["levels"]] == [1, 3]
    for level in document["levels"]:
        assert level["failed"] == 0 and level["stopped_by"] == "count"
        assert level["ttft_s"]["p50"] < level["latency_s"]["p50"]
        assert level["ttft_s"]["p99"] <= level["latency_s"]["p99"]
        assert level["completion_tokens"] == 5 * 7
        assert level["tokens_per_s"]["aggregate"] == pytest.approx(35 / level["wall_s"], rel=0.01)
        assert level["tokens_per_s"]["server_mean"] == 250.0
    assert document["model"] == MODEL


def test_the_time_limit_stops_a_level(server: FakeServer) -> None:
    server.state.delay = 0.02  # about 0.1 s per request
    started = time.monotonic()
    level = run_level(config(server, requests=1000, time_limit_s=0.25), 2)
    elapsed = time.monotonic() - started
    assert level.stopped_by == "time_limit"
    assert 2 <= len(level.results) < 20
    assert len(level.results) == server.state.count
    assert elapsed < 1.0


def test_a_stalled_stream_times_out(server: FakeServer) -> None:
    server.state.mode = "stall"
    started = time.monotonic()
    result = send_request(config(server, timeout_s=0.3))
    assert time.monotonic() - started < 1.0
    assert (result.ok, result.status, result.error) == (False, 200, "timed out after 0.3 s")


def test_api_key_header_and_401_without_it(server: FakeServer) -> None:
    server.state.key = KEY
    refused = send_request(config(server))
    assert (refused.ok, refused.status) == (False, 401)
    assert refused.error == "HTTP 401 Unauthorized: Invalid API Key (None)"
    accepted = send_request(config(server, api_key=KEY))
    assert accepted.ok, accepted.error
    assert server.state.authorizations == [None, f"Bearer {KEY}"]
    wrong = send_request(config(server, api_key="sk-wrong-key"))
    assert wrong.error is not None and "sk-wrong-key" not in wrong.error
    assert KEY not in repr(config(server, api_key=KEY))


def test_failures_are_counted_with_their_reasons(server: FakeServer) -> None:
    server.state.fail_every = 3
    summary = summarize_level(run_level(config(server, requests=9), 1))
    assert (summary["succeeded"], summary["failed"]) == (6, 3)
    assert summary["errors"] == [
        {"reason": "HTTP 500 Internal Server Error: slot unavailable", "count": 3}
    ]


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("malformed", "malformed stream: a data chunk is not JSON"), ("no_done", "ended before")],
)
def test_malformed_streams_fail(server: FakeServer, mode: str, reason: str) -> None:
    server.state.mode = mode
    result = send_request(config(server))
    assert not result.ok and result.error is not None and reason in result.error


def test_connection_refused_fails_every_request() -> None:
    document = run_benchmark(
        BenchConfig(f"http://127.0.0.1:{closed_port()}", concurrency=(2,), requests=4)
    )
    level = document["levels"][0]
    assert (level["requests"], level["failed"]) == (4, 4)
    assert level["errors"] == [{"reason": "connection refused", "count": 4}]
    assert document["warmup"]["error"] == "connection refused"
    assert "connection refused" in format_report(document)


# -- the command line ------------------------------------------------------------------------------


def test_cli_prints_a_table_and_writes_json(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "api_key"
    key_file.write_text(KEY + "\n")
    server.state.key = KEY
    out = tmp_path / "results" / "gpu-01.json"
    argv = [server.endpoint, "--concurrency", "1,2", "--requests", "4", "--max-tokens", "16"]
    code = main(["bench", *argv, "--api-key-file", str(key_file), "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "TTFT p50 ms" in captured.out and MODEL in captured.out
    assert [line.split()[0] for line in captured.out.splitlines()[-2:]] == ["1", "2"]
    document = json.loads(out.read_text())
    assert set(document) == {
        "endpoint",
        "url",
        "model",
        "started_at",
        "settings",
        "warmup",
        "levels",
    }
    assert document["endpoint"] == server.endpoint
    assert document["model"] == MODEL
    assert document["settings"]["concurrency"] == [1, 2]
    assert document["settings"]["max_tokens"] == 16
    assert document["settings"]["api_key"] is True
    level = document["levels"][1]
    assert set(level) >= {
        "concurrency", "requests", "succeeded", "failed", "latency_s", "ttft_s",
        "tokens_per_s", "requests_per_s", "errors", "wall_s", "stopped_by",
    }  # fmt: skip
    assert set(level["latency_s"]) >= {"p50", "p99"} and set(level["ttft_s"]) >= {"p50", "p99"}
    assert set(level["tokens_per_s"]) >= {"mean", "aggregate"}
    assert all(auth == f"Bearer {KEY}" for auth in server.state.authorizations)
    assert KEY not in captured.out + captured.err + out.read_text()


def test_cli_fails_when_every_request_of_a_level_fails(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server.state.key = KEY
    monkeypatch.setenv("LLMFLEET_API_KEY", "sk-env-wrong-0000")
    code = main(["bench", server.endpoint, "--concurrency", "1", "--requests", "2", "-q"])
    captured = capsys.readouterr()
    assert code == 1
    assert "every request failed at concurrency 1" in captured.err
    assert "2 failed: HTTP 401" in captured.out
    assert "sk-env-wrong-0000" not in captured.out + captured.err
    monkeypatch.setenv("LLMFLEET_API_KEY", KEY)
    assert main(["bench", server.endpoint, "--concurrency", "1", "--requests", "2", "-q"]) == 0


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "http://127.0.0.1:9", "--concurrency", "0"]) == 2
    assert main(["bench", "http://127.0.0.1:9", "--requests", "0"]) == 2
    missing = tmp_path / "no-such-key"
    assert main(["bench", "http://127.0.0.1:9", "--api-key-file", str(missing)]) == 2
    assert "cannot read the API key file" in capsys.readouterr().err
