"""`llmfleet bench` against a fake OpenAI-compatible streaming server on 127.0.0.1.

The fake server (stdlib, threaded) behaves as llama-server does where the benchmark looks:
``POST /tokenize`` (``with_pieces``), ``GET /metrics`` (the ``llamacpp:`` counters, updated
before the client sees the end of a stream), and streamed chat completions (chunked SSE,
a role chunk, one chunk per token, ``reasoning_content`` first for a thinking model, a
finish chunk, a usage chunk with ``timings``, then ``data: [DONE]``), with ``max_tokens``
tokens when ``ignore_eos`` is set and a short natural answer otherwise. It records every
request and the most it held at once, and can demand an API key, fail some requests,
misbehave, or count tokens the client did not get. No test enforces a speed: times are only
checked against the delays the fake sleeps, from below.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmfleet import bench
from llmfleet.bench import (
    SCHEMA,
    SCHEMA_FILE,
    BenchConfig,
    BenchError,
    Level,
    LevelRun,
    Prompt,
    RequestResult,
    StreamError,
    base_url,
    build_prompts,
    chat_url,
    default_metrics_url,
    drive_level,
    format_report,
    parse_concurrency,
    parse_rates,
    read_stream,
    run_benchmark,
    run_level,
    send_request,
    summarize_level,
)
from llmfleet.bench_compare import (
    COMPARE_SCHEMA_FILE,
    CompareError,
    compare,
    format_comparison,
    load_bench,
)
from llmfleet.bench_stats import Objective, poisson_arrivals
from llmfleet.cli import main
from llmfleet.validation import check, compile_schema

MODEL = "qwen2.5-7b-instruct-q4_k_m.gguf"
KEY = "sk-test-9f8e7d6c5b4a"
TEMPLATE_TOKENS = 9  # what the fake's chat template adds to a prompt


def pieces(text: str) -> list[str]:
    """The fake's tokenizer: each word in pieces of up to four letters, the first with its space."""
    return re.findall(r" ?[^ ]{1,4}", text)


@dataclass
class FakeState:
    """How the fake server behaves, and what it saw."""

    mode: str = "ok"  # ok | no_usage | usage_only | malformed | no_done | stall
    key: str | None = None  # demand "Authorization: Bearer <key>"
    fail_every: int = 0  # answer 500 to every n-th chat completion
    first_delay: float = 0.004  # seconds before the first token
    delay: float = 0.002  # seconds before each later token
    natural_tokens: int = 3  # the answer's length without ignore_eos
    honours_ignore_eos: bool = True
    reasoning_tokens: int = 0  # the first tokens come as reasoning_content
    answer_delay: float = 0.0  # seconds between thinking and answer
    cached_tokens: int = 0  # prompt tokens found in the cache, per request
    metrics: str = "on"  # on | off (501) | no_cached_counter
    extra_predicted: int = 0  # tokens the server counts beyond what it sends, per request
    metrics_basic: str | None = None  # /metrics asks for basic auth "USER:PASSWORD" instead
    # speculative decoding, per request: tokens drafted, accepted, drafts checked (0: none)
    draft_n: int = 0
    draft_accepted: int = 0
    drafts: int = 0
    draft_timings: bool = True  # the last timings say draft_n (False: dropped on the way)
    draft_counters: bool = True  # /metrics has the llamacpp:spec_decode_ counters
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    count: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    started: list[float] = field(default_factory=list)
    authorizations: dict[str, list[str | None]] = field(default_factory=dict)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    tokenize_calls: int = 0
    # the llamacpp: counters /metrics reports, by name (0 until a request moves them)
    totals: Counter[str] = field(default_factory=Counter)


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event: a data line and the blank line that ends it."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def lines(*events: bytes) -> list[bytes]:
    """Events as the lines a client reads one by one."""
    return b"".join(events).splitlines(keepends=True)


def chunk(
    content: str | None = None,
    role: str | None = None,
    reasoning: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    finish = extra.pop("finish_reason", None)
    choices = extra.pop("choices", [{"index": 0, "delta": delta, "finish_reason": finish}])
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": choices,
        **extra,
    }


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # each chunk leaves when written, as the test asks
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _json(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _authorized(self) -> bool:
        state = self.server.state
        authorization = self.headers.get("Authorization")
        with state.lock:
            state.authorizations.setdefault(self.path, []).append(authorization)
        if state.key and authorization != f"Bearer {state.key}":
            # A careless server that echoes the header: the key must still not leak.
            message = f"Invalid API Key ({authorization})"
            self._json(401, {"error": {"code": 401, "message": message}})
            return False
        return True

    def do_GET(self) -> None:
        state = self.server.state
        self.close_connection = True
        if self.path != "/metrics":
            return self._json(404, {"error": {"code": 404, "message": "File Not Found"}})
        if state.metrics_basic:
            token = base64.b64encode(state.metrics_basic.encode()).decode()
            if self.headers.get("Authorization") != f"Basic {token}":
                return self._json(401, {"error": {"code": 401, "message": "Unauthorized"}})
        elif not self._authorized():
            return None
        if state.metrics == "off":
            message = "This server does not support metrics endpoint."
            return self._json(501, {"error": {"code": 501, "message": message}})
        names = ["prompt_tokens_total", "tokens_predicted_total"]
        if state.metrics != "no_cached_counter":
            names.append("prompt_tokens_cached_total")
        if state.draft_counters:  # as llama-server's, 0 without a draft model
            names += [
                "spec_decode_num_draft_tokens_total",
                "spec_decode_num_accepted_tokens_total",
                "spec_decode_num_drafts_total",
            ]
        with state.lock:
            text = [
                "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.",
                "# TYPE llamacpp:prompt_tokens_total counter",
                *(f"llamacpp:{name} {state.totals[name]}" for name in names),
                f"llamacpp:requests_processing {state.in_flight}",
            ]
            if state.draft_counters:
                text.append(
                    "llamacpp:spec_decode_num_accepted_tokens_per_pos_total"
                    f'{{position="0"}} {state.totals["spec_decode_num_drafts_total"]}'
                )
        body = ("\n".join(text) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return None

    def do_POST(self) -> None:
        state = self.server.state
        self.close_connection = True
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self._authorized():
            return None
        if self.path == "/tokenize":
            with state.lock:
                state.tokenize_calls += 1
            found = pieces(body["content"])
            tokens = [
                {"id": n, "piece": piece} if body.get("with_pieces") else n
                for n, piece in enumerate(found)
            ]
            return self._json(200, {"tokens": tokens})
        if self.path != "/v1/chat/completions":
            return self._json(404, {"error": {"code": 404, "message": "File Not Found"}})
        with state.lock:
            state.count += 1
            number = state.count
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            state.started.append(time.monotonic())
            state.bodies.append(body)
        self._in_flight = True
        try:
            if state.fail_every and number % state.fail_every == 0:
                self._leave()
                return self._json(500, {"error": {"code": 500, "message": "slot unavailable"}})
            return self._stream(state, body)
        finally:
            self._leave()

    def _leave(self) -> None:
        """Out of the in-flight count, before the last write lets the client go on."""
        if self._in_flight:
            self._in_flight = False
            with self.server.state.lock:
                self.server.state.in_flight -= 1

    def _stream(self, state: FakeState, body: dict[str, Any]) -> None:
        prompt = len(pieces(body["messages"][0]["content"])) + TEMPLATE_TOKENS
        cached = min(state.cached_tokens, prompt - 1) if body.get("cache_prompt", True) else 0
        limit = body.get("max_tokens", 16)
        ignore_eos = body.get("ignore_eos") and state.honours_ignore_eos
        tokens = limit if ignore_eos else min(state.natural_tokens, limit)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk(b": keep-alive comment\n\n" + sse(chunk(role="assistant", content=None)))
        for index in range(tokens):
            time.sleep(state.first_delay if index == 0 else state.delay)
            if state.mode == "malformed" and index == 1:
                self._chunk(b"data: {not json\n\n")
                return self._chunk(b"")
            if state.mode == "stall" and index == 1:
                state.release.wait(5)
                return None
            if index < state.reasoning_tokens:
                self._chunk(sse(chunk(reasoning=f"think{index} ")))
            else:
                if index == state.reasoning_tokens and index:
                    time.sleep(state.answer_delay)
                self._chunk(sse(chunk(content=f"tok{index} ")))
        with state.lock:  # the counters move before the client sees the end, as llama-server's
            state.totals.update(
                prompt_tokens_total=prompt - cached,
                prompt_tokens_cached_total=cached,
                tokens_predicted_total=tokens + state.extra_predicted,
                spec_decode_num_draft_tokens_total=state.draft_n,
                spec_decode_num_accepted_tokens_total=state.draft_accepted,
                spec_decode_num_drafts_total=state.drafts,
            )
        self._leave()
        self._chunk(sse(chunk(finish_reason="length")))
        last: dict[str, Any] = {"choices": []}
        if state.mode in ("ok", "usage_only"):
            last["usage"] = {
                "completion_tokens": tokens,
                "prompt_tokens": prompt,
                "total_tokens": prompt + tokens,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
        if state.mode in ("ok", "no_usage"):
            last["timings"] = {
                "cache_n": cached,
                "prompt_n": prompt - cached,
                "predicted_n": tokens,
                "predicted_per_second": 250.0,
            }
            if state.draft_n and state.draft_timings:  # llama-server: only when it drafted
                last["timings"].update(
                    {"draft_n": state.draft_n, "draft_n_accepted": state.draft_accepted}
                )
        if len(last) > 1:
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
        "levels": (Level(concurrency=1),),
        "requests": 3,
        "input_tokens": 16,
        "output_tokens": 6,
        "timeout_s": 5.0,
        "time_limit_s": 10.0,
    }
    settings.update(overrides)
    return BenchConfig(**settings)


def prompt(text: str = "hello world", index: int = 0) -> Prompt:
    return Prompt(index, text, len(pieces(text)))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def validate(document: dict[str, Any]) -> None:
    """The document against the published JSON Schema."""
    validator = compile_schema(json.loads(SCHEMA_FILE.read_text()))
    problems = check(validator, json.loads(json.dumps(document)))
    assert problems == [], problems


# -- the stream ------------------------------------------------------------------------------------


def test_read_stream_times_every_text_chunk_thinking_included() -> None:
    clock = iter([1.0, 1.5, 1.75, 2.5]).__next__  # one reading per chunk with text
    events = [
        sse(chunk(role="assistant", content=None)),  # no text yet: not the first token
        sse(chunk(reasoning="Let me")),
        sse(chunk(reasoning=" think")),
        sse(chunk(content="")),  # empty: not a token
        sse(chunk(content="Hello")),
        sse(chunk(content=" world")),
        sse(chunk(finish_reason="length")),
        sse(chunk(choices=[], usage={"completion_tokens": 4, "prompt_tokens": 20})),
        b"data: [DONE]\n\n",
    ]
    summary = read_stream(lines(*events), clock=clock)
    assert summary.token_times == [1.0, 1.5, 1.75, 2.5]
    assert (summary.reasoning_chunks, summary.content_chunks) == (2, 2)
    assert (summary.completion_tokens, summary.token_source) == (4, "usage")
    assert (summary.prompt_tokens, summary.model) == (20, MODEL)


def test_request_figures_follow_the_definitions() -> None:
    # sent at 0; tokens at 0.2, 0.25, 0.4, 0.7; the stream ends at 1.0; 5 tokens by usage
    result = RequestResult(
        ok=True, latency_s=1.0, ttft_s=0.2, completion_tokens=5, itl_s=[0.05, 0.15, 0.3]
    )
    assert result.tpot_s == pytest.approx(0.2)  # (1.0 - 0.2) / (5 - 1)
    assert result.figures() == {"ttft": 0.2, "tpot": pytest.approx(0.2), "e2e": 1.0}
    assert RequestResult(ok=False, error="x").figures() is None


def test_read_stream_token_counts_usage_then_timings_then_chunks() -> None:
    events = [sse(chunk(content="Hello")), sse(chunk(content=" world"))]
    usage = sse(chunk(usage={"completion_tokens": 5}, timings={"predicted_n": 9, "prompt_n": 3}))
    summary = read_stream(lines(*events, usage, b"data: [DONE]\n"))
    assert (summary.completion_tokens, summary.token_source) == (5, "usage")
    assert summary.prompt_processed == 3
    summary = read_stream(lines(*events, sse(chunk(timings={"predicted_n": 9})), sse("[DONE]")))
    assert (summary.completion_tokens, summary.token_source) == (9, "timings")
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


def test_urls_and_level_parsing() -> None:
    assert chat_url("http://10.0.0.5:8080") == "http://10.0.0.5:8080/v1/chat/completions"
    assert chat_url("10.0.0.5:8080/v1/") == "http://10.0.0.5:8080/v1/chat/completions"
    assert chat_url("https://h/v1/chat/completions") == "https://h/v1/chat/completions"
    assert base_url("https://h/llm/v1/chat/completions") == "https://h/llm"
    assert default_metrics_url("10.0.0.5:8080/v1") == "http://10.0.0.5:8080/metrics"
    with pytest.raises(ValueError):
        chat_url("ftp://h")
    assert parse_concurrency("1,4, 8") == (1, 4, 8)
    for bad in ("", "0", "a,b", "2,-1"):
        with pytest.raises(ValueError):
            parse_concurrency(bad)
    assert parse_rates("0.5, 2") == (0.5, 2.0)
    for bad in ("", "0", "fast", "-1", "inf"):
        with pytest.raises(ValueError):
            parse_rates(bad)
    assert Level(concurrency=4).name == "concurrency 4"
    assert Level(rate=2.5, max_in_flight=8).name == "rate 2.5/s (max 8)"
    for bad in ({}, {"concurrency": 1, "rate": 1.0}, {"concurrency": 0}, {"rate": 0.0}):
        with pytest.raises(ValueError):
            Level(**bad)


# -- prompts through /tokenize -------------------------------------------------------------------


def test_prompts_are_distinct_and_exactly_as_long_as_asked(server: FakeServer) -> None:
    prompts = build_prompts(config(server, input_tokens=37), first=1, count=12)
    assert [p.index for p in prompts] == list(range(1, 13))
    assert all(len(pieces(p.text)) == 37 and p.tokens == 37 for p in prompts)
    assert len({p.text for p in prompts}) == 12
    assert build_prompts(config(server, input_tokens=37), first=1, count=12) == prompts
    assert build_prompts(config(server, input_tokens=37, seed=1), first=1, count=1) != prompts[:1]
    assert server.state.tokenize_calls >= 24  # draw and check, per prompt


def test_a_server_without_tokenize_stops_the_run(server: FakeServer) -> None:
    with pytest.raises(BenchError, match=r"/tokenize: connection refused"):
        build_prompts(config(server, endpoint=f"http://127.0.0.1:{closed_port()}"), 0, 1)
    with pytest.raises(BenchError, match=r"HTTP 404 Not Found: File Not Found"):
        build_prompts(config(server, endpoint=server.endpoint + "/other/v1"), 0, 1)


# -- one request -----------------------------------------------------------------------------------


def test_one_request_sends_the_workload_and_measures_it(server: FakeServer) -> None:
    server.state.first_delay, server.state.delay = 0.03, 0.01
    result = send_request(config(server, output_tokens=8), prompt("alpha beta gamma"))
    assert result.ok, result.error
    assert result.status == 200
    body = server.state.bodies[0]
    assert body["messages"] == [{"role": "user", "content": "alpha beta gamma"}]
    assert (body["max_tokens"], body["ignore_eos"], body["temperature"]) == (8, True, 0)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["cache_prompt"] is False and "model" not in body  # every prompt computed whole
    # the answer has exactly max_tokens tokens, each timed
    assert (result.completion_tokens, result.token_source) == (8, "usage")
    assert (result.content_chunks, result.reasoning_chunks, len(result.itl_s)) == (8, 0, 7)
    assert result.prompt_tokens == len(pieces("alpha beta gamma")) + TEMPLATE_TOKENS
    assert result.input_tokens == len(pieces("alpha beta gamma"))
    assert result.ttft_s is not None and result.latency_s is not None
    assert result.ttft_s >= 0.03  # the fake slept that long before the first token
    assert sum(result.itl_s) <= result.latency_s - result.ttft_s
    assert sum(result.itl_s) >= 7 * 0.01 * 0.5  # seven sleeps of 10 ms, from below only
    assert result.tpot_s == pytest.approx((result.latency_s - result.ttft_s) / 7)
    assert result.model == MODEL
    assert server.state.authorizations["/v1/chat/completions"] == [None]


def test_a_server_that_ignores_ignore_eos_gives_short_answers_and_is_told(
    server: FakeServer,
) -> None:
    server.state.honours_ignore_eos = False  # it stops at its natural end
    level = run_level(config(server, output_tokens=6), Level(concurrency=1))
    assert level["output_tokens"]["short"] == 3
    assert level["output_tokens"]["total"] == 3 * server.state.natural_tokens
    assert "3 answers had fewer than 6 tokens" in format_report(document_of(level))


def test_thinking_counts_as_output_and_starts_ttft(server: FakeServer) -> None:
    server.state.reasoning_tokens, server.state.answer_delay = 3, 0.05
    result = send_request(config(server, output_tokens=6), prompt())
    assert result.ok, result.error
    assert (result.reasoning_chunks, result.content_chunks) == (3, 3)
    assert result.completion_tokens == 6
    assert len(result.itl_s) == 5
    # TTFT is the first thought; the pause before the answer is one of the gaps
    assert result.ttft_s is not None and result.latency_s is not None
    assert max(result.itl_s) >= 0.05
    assert result.ttft_s <= result.latency_s - 0.05


@pytest.mark.parametrize(
    ("mode", "tokens", "source"), [("usage_only", 6, "usage"), ("no_usage", 6, "timings")]
)
def test_token_count_without_usage_or_timings(
    server: FakeServer, mode: str, tokens: int, source: str
) -> None:
    server.state.mode = mode
    result = send_request(config(server), prompt())
    assert (result.ok, result.completion_tokens, result.token_source) == (True, tokens, source)


def test_a_stalled_stream_times_out(server: FakeServer) -> None:
    server.state.mode = "stall"
    started = time.monotonic()
    result = send_request(config(server, timeout_s=0.3), prompt())
    assert time.monotonic() - started < 4.0  # it ends by itself (the fake would hold 5 s)
    assert (result.ok, result.status, result.error) == (False, 200, "timed out after 0.3 s")


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("malformed", "malformed stream: a data chunk is not JSON"), ("no_done", "ended before")],
)
def test_malformed_streams_fail(server: FakeServer, mode: str, reason: str) -> None:
    server.state.mode = mode
    result = send_request(config(server), prompt())
    assert not result.ok and result.error is not None and reason in result.error


def test_a_refused_connection_is_a_failed_request() -> None:
    cfg = BenchConfig(f"http://127.0.0.1:{closed_port()}")
    result = send_request(cfg, prompt())
    assert (result.ok, result.error) == (False, "connection refused")


# -- levels ----------------------------------------------------------------------------------------


def document_of(*levels: dict[str, Any]) -> dict[str, Any]:
    """A document around levels, for format_report."""
    cfg = BenchConfig("http://127.0.0.1:1")
    return {
        "schema": SCHEMA,
        "tool": "llmfleet test",
        "endpoint": cfg.endpoint,
        "url": cfg.url,
        "model": None,
        "started_at": "2025-01-01T00:00:00+00:00",
        "settings": cfg.settings(),
        "warmup": None,
        "levels": list(levels),
    }


def test_a_level_reports_distributions_and_the_metrics_check(server: FakeServer) -> None:
    server.state.cached_tokens = 4  # the template's head, as a slot's cache would keep it
    cfg = config(server, requests=12, output_tokens=5, prompt_cache=True)
    level = run_level(cfg, Level(concurrency=3))
    assert (level["name"], level["mode"], level["concurrency"]) == (
        "concurrency 3",
        "concurrency",
        3,
    )
    assert (level["requests"], level["succeeded"], level["failed"]) == (12, 12, 0)
    assert server.state.max_in_flight == 3
    assert level["ttft_s"]["n"] == level["tpot_s"]["n"] == level["e2e_s"]["n"] == 12
    assert level["itl_s"]["n"] == 12 * 4
    assert level["ttft_s"]["p90"] is not None and level["ttft_s"]["p99"] is None  # 12 < 100
    assert level["itl_s"]["p90"] is not None
    assert level["ttft_s"]["p50"] <= level["e2e_s"]["p50"]
    assert level["output_tokens"] == {
        "per_request": 5,
        "total": 60,
        "short": 0,
        "token_source": "usage",
        "content_chunks": 60,
        "reasoning_chunks": 0,
    }
    assert level["input_tokens"] == {
        "per_request": 16,
        "prompt_tokens_mean": 16 + TEMPLATE_TOKENS,
        "cached_tokens": 12 * 4,
    }
    wall = level["wall_s"]
    assert level["throughput"]["output_tokens_per_s"] == pytest.approx(60 / wall, rel=1e-3)
    assert level["throughput"]["requests_per_s"] == pytest.approx(12 / wall, rel=1e-3)
    assert level["goodput"] is None and level["arrival_lag_s"] is None
    metrics = level["server_metrics"]
    assert metrics["url"] == server.endpoint + "/metrics"
    assert metrics["error"] is None and metrics["flagged"] is False
    assert metrics["prompt_tokens"] == {
        "client": 12 * (16 + TEMPLATE_TOKENS),
        "server": 12 * (16 + TEMPLATE_TOKENS),
        "relative_difference": 0.0,
        "flagged": False,
        "basis": "all",
    }
    assert (metrics["output_tokens"]["client"], metrics["output_tokens"]["server"]) == (60, 60)
    # every prompt of the level was distinct and of the asked length
    contents = [body["messages"][0]["content"] for body in server.state.bodies]
    assert len(set(contents)) == 12
    assert all(len(pieces(content)) == 16 for content in contents)


def test_the_metrics_check_flags_a_server_that_counted_more(server: FakeServer) -> None:
    server.state.extra_predicted = 1  # e.g. another client, or a proxy's retry
    level = run_level(config(server, requests=4, output_tokens=8), Level(concurrency=2))
    output = level["server_metrics"]["output_tokens"]
    assert (output["client"], output["server"]) == (32, 36)
    assert output["relative_difference"] == pytest.approx(-4 / 36, abs=1e-6)  # -11.1 %
    assert output["flagged"] is True and level["server_metrics"]["flagged"] is True
    report = format_report(document_of(level))
    assert re.search(r"concurrency 2\s+output\s+32\s+36\s+-11\.11%\s+FLAGGED", report)
    assert "token counts differ by more than 1%" in report


def test_prompts_found_in_the_servers_cache_are_told(server: FakeServer) -> None:
    server.state.cached_tokens = 20  # of 25: as a second run with the same seed would find
    level = run_level(config(server, prompt_cache=True), Level(concurrency=1))
    assert level["input_tokens"]["cached_tokens"] == 3 * 20
    assert "60 of 75 prompt tokens came from the server's cache" in format_report(
        document_of(level)
    )
    assert level["server_metrics"]["flagged"] is False  # cached tokens are counted too
    level = run_level(config(server), Level(concurrency=1))  # cache_prompt false: none cached
    assert level["input_tokens"]["cached_tokens"] == 0


def test_the_metrics_check_without_the_cached_counter(server: FakeServer) -> None:
    server.state.metrics, server.state.cached_tokens = "no_cached_counter", 4
    level = run_level(config(server, requests=3, prompt_cache=True), Level(concurrency=1))
    prompt_check = level["server_metrics"]["prompt_tokens"]
    assert prompt_check["basis"] == "processed"
    assert prompt_check["client"] == prompt_check["server"] == 3 * (16 + TEMPLATE_TOKENS - 4)
    assert level["server_metrics"]["flagged"] is False


def test_metrics_that_cannot_be_read_leave_the_level_measured(server: FakeServer) -> None:
    server.state.metrics = "off"
    level = run_level(config(server), Level(concurrency=1))
    assert level["succeeded"] == 3
    error = level["server_metrics"]["error"]
    assert "HTTP 501" in error and "start llama-server with --metrics" in error
    assert "server metrics not read" in format_report(document_of(level))
    off = run_level(config(server, read_metrics=False), Level(concurrency=1))
    assert off["server_metrics"] is None


def test_too_few_requests_for_a_percentile_are_said_so(server: FakeServer) -> None:
    level = run_level(config(server, requests=5, output_tokens=4), Level(concurrency=1))
    assert level["ttft_s"]["n"] == 5
    assert level["ttft_s"]["p50"] is not None
    assert level["ttft_s"]["p90"] is None and level["ttft_s"]["p99"] is None
    assert level["itl_s"]["n"] == 15 and level["itl_s"]["p90"] is not None
    report = format_report(document_of(level))
    assert "n too small for p99" in report and "n too small for p90" in report
    assert "p99 needs n >= 100" in report


def test_a_failing_request_is_counted_as_failed(server: FakeServer) -> None:
    server.state.fail_every = 3
    level = run_level(config(server, requests=9), Level(concurrency=1))
    assert (level["requests"], level["succeeded"], level["failed"]) == (9, 6, 3)
    assert level["errors"] == [
        {"reason": "HTTP 500 Internal Server Error: slot unavailable", "count": 3}
    ]
    assert level["ttft_s"]["n"] == 6  # only successful requests are measured
    assert "concurrency 1: 3 failed: HTTP 500" in format_report(document_of(level))


def test_summarize_level_keeps_the_first_few_reasons() -> None:
    results = [RequestResult(ok=False, error=f"reason {n}") for n in range(8)]
    cfg = BenchConfig("http://127.0.0.1:1")
    level = summarize_level(LevelRun(Level(concurrency=1), results, 1.0, "count"), cfg)
    assert len(level["errors"]) == 5 and level["errors_left_out"] == 3
    assert level["e2e_s"]["n"] == 0 and level["throughput"]["output_tokens_per_s"] == 0


def test_an_open_loop_level_sends_at_the_poisson_times(server: FakeServer) -> None:
    cfg = config(server, requests=10, seed=3)
    level = Level(rate=40.0)
    prompts = build_prompts(cfg, 1, 10)
    run = drive_level(cfg, level, prompts)
    expected = poisson_arrivals(40.0, 10, "llmfleet-bench:3:rate:40.0")
    scheduled = sorted(r.scheduled_s for r in run.results if r.scheduled_s is not None)
    assert scheduled == pytest.approx(expected)
    assert all(r.started_s is not None and r.scheduled_s is not None for r in run.results)
    assert all(r.started_s >= r.scheduled_s for r in run.results)  # type: ignore[operator]
    summary = summarize_level(run, cfg)
    assert (summary["mode"], summary["rate"], summary["succeeded"]) == ("rate", 40.0, 10)
    assert summary["arrival_lag_s"]["n"] == 10 and summary["arrival_lag_s"]["max"] >= 0


def test_an_open_loop_level_keeps_to_its_max_in_flight(server: FakeServer) -> None:
    server.state.first_delay = 0.05
    level = run_level(config(server, requests=8), Level(rate=1000.0, max_in_flight=2))
    assert level["succeeded"] == 8
    assert server.state.max_in_flight == 2
    assert level["max_in_flight"] == 2
    assert level["arrival_lag_s"]["max"] > 0.05  # requests waited for a free place


def test_the_time_limit_stops_a_level(server: FakeServer) -> None:
    server.state.first_delay = 0.05
    cfg = config(server, requests=200, time_limit_s=0.3)
    prompts = [prompt(f"word{n}", n) for n in range(200)]
    started = time.monotonic()
    run = drive_level(cfg, Level(concurrency=2), prompts)
    assert run.stopped_by == "time_limit"
    assert 2 <= len(run.results) < 200
    assert len(run.results) == server.state.count
    assert time.monotonic() - started < 5.0  # it ends by itself
    rated = drive_level(cfg, Level(rate=5.0), prompts)
    assert rated.stopped_by == "time_limit" and len(rated.results) < 10


def test_goodput_against_objectives(server: FakeServer) -> None:
    server.state.first_delay = 0.02
    strict = (Objective("ttft", 0.001),)  # below the fake's own 20 ms: nobody meets it
    level = run_level(config(server, objectives=strict), Level(concurrency=1))
    assert level["goodput"]["good"] == 0 and level["goodput"]["requests_per_s"] == 0
    loose = (Objective("ttft", 60.0), Objective("tpot", 60.0), Objective("e2e", 60.0))
    server.state.fail_every = 3
    level = run_level(config(server, objectives=loose), Level(concurrency=1))
    assert (level["goodput"]["good"], level["goodput"]["sent"]) == (2, 3)
    assert level["goodput"]["requests_per_s"] == pytest.approx(2 / level["wall_s"], rel=1e-3)
    assert level["goodput"]["objectives"] == {"ttft": 60.0, "tpot": 60.0, "e2e": 60.0}


def test_the_api_key_goes_to_the_endpoints_host_only(server: FakeServer) -> None:
    server.state.key = KEY
    refused = send_request(config(server), prompt())
    assert (refused.ok, refused.status) == (False, 401)
    assert refused.error == "HTTP 401 Unauthorized: Invalid API Key (None)"
    level = run_level(config(server, api_key=KEY), Level(concurrency=1))
    assert level["succeeded"] == 3 and level["server_metrics"]["flagged"] is False
    seen = server.state.authorizations
    assert set(seen) == {"/v1/chat/completions", "/tokenize", "/metrics"}
    assert all(auth == f"Bearer {KEY}" for auth in seen["/tokenize"] + seen["/metrics"])
    # the same server under another host name: no key for it, so its metrics refuse
    other = server.endpoint.replace("127.0.0.1", "localhost") + "/metrics"
    level = run_level(config(server, api_key=KEY, metrics_url=other), Level(concurrency=1))
    assert "HTTP 401" in level["server_metrics"]["error"]
    assert KEY not in level["server_metrics"]["error"]
    wrong = send_request(config(server, api_key="sk-wrong-key"), prompt())
    assert wrong.error is not None and "sk-wrong-key" not in wrong.error
    assert KEY not in repr(config(server, api_key=KEY))


# -- the whole run ---------------------------------------------------------------------------------


def test_benchmark_warms_up_then_runs_each_level_with_its_own_prompts(server: FakeServer) -> None:
    cfg = config(
        server,
        levels=(Level(concurrency=1), Level(concurrency=3), Level(rate=50.0, max_in_flight=4)),
        requests=5,
        objectives=(Objective("ttft", 30.0),),
    )
    document = run_benchmark(cfg)
    validate(document)
    assert document["schema"] == "llmfleet.bench/2"
    assert server.state.count == 1 + 3 * 5  # the warm-up is sent, not counted
    assert document["warmup"]["ok"] is True
    assert [level["name"] for level in document["levels"]] == [
        "concurrency 1",
        "concurrency 3",
        "rate 50/s (max 4)",
    ]
    contents = [body["messages"][0]["content"] for body in server.state.bodies]
    assert len(set(contents)) == 16  # no prompt sent twice in a run
    for level in document["levels"]:
        assert level["failed"] == 0 and level["stopped_by"] == "count"
        assert level["server_metrics"]["flagged"] is False
        assert level["goodput"]["good"] == 5
    assert document["model"] == MODEL
    assert document["settings"]["levels"][2] == {
        "mode": "rate",
        "concurrency": None,
        "rate": 50.0,
        "max_in_flight": 4,
    }


def test_the_schema_holds_for_failures_and_no_metrics(server: FakeServer) -> None:
    server.state.fail_every, server.state.metrics = 2, "off"
    validate(run_benchmark(config(server, warmup=False)))
    validate(run_benchmark(config(server, read_metrics=False)))
    server.state.fail_every = 1
    document = run_benchmark(config(server))
    validate(document)
    assert document["warmup"]["ok"] is False
    assert "warm-up: failed: HTTP 500" in format_report(document)
    broken = json.loads(json.dumps(document))
    broken["levels"][0]["failed"] = "none"
    del broken["levels"][0]["ttft_s"]["p99"]
    validator = compile_schema(json.loads(SCHEMA_FILE.read_text()))
    assert [problem.path for problem in check(validator, broken)] == [
        ("levels", 0, "failed"),
        ("levels", 0, "ttft_s", "p99"),
    ]


# -- the command line ------------------------------------------------------------------------------


def test_cli_prints_the_tables_and_writes_json(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "api_key"
    key_file.write_text(KEY + "\n")
    server.state.key = KEY
    out = tmp_path / "results" / "gpu-01.json"
    argv = [server.endpoint, "--concurrency", "1,2", "--requests", "4", "--max-tokens", "5"]
    argv += ["--input-tokens", "24", "--slo", "ttft=60s", "--slo", "tpot=10s", "--seed", "9"]
    code = main(["bench", *argv, "--api-key-file", str(key_file), "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert MODEL in captured.out
    assert "ttft <= 60000 ms, tpot <= 10000 ms" in captured.out
    assert re.search(r"concurrency 2\s+TTFT ms\s+4\s", captured.out)
    assert re.search(r"concurrency 1\s+output\s+20\s+20\s+\+0\.00%\s+ok", captured.out)
    document = json.loads(out.read_text())
    validate(document)
    assert document["settings"]["output_tokens"] == 5
    assert document["settings"]["input_tokens"] == 24
    assert document["settings"]["seed"] == 9
    assert document["settings"]["api_key"] is True
    assert [level["succeeded"] for level in document["levels"]] == [4, 4]
    assert [level["failed"] for level in document["levels"]] == [0, 0]
    assert all(level["goodput"]["good"] == 4 for level in document["levels"])
    assert all(
        auth == f"Bearer {KEY}" for auths in server.state.authorizations.values() for auth in auths
    )
    assert KEY not in captured.out + captured.err + out.read_text()


def test_cli_rate_levels_and_the_metrics_url(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", server.endpoint, "--rate", "100", "--max-in-flight", "2", "--requests", "3"]
    argv += [
        "--metrics-url",
        server.endpoint + "/metrics",
        "--no-warmup",
        "-q",
        "--prompt-cache",
        "--input-tokens",
        "8",
        "--output-tokens",
        "3",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "rate 100/s (max 2)" in out and "concurrency" not in out
    assert all("cache_prompt" not in body for body in server.state.bodies)
    assert server.state.count == 3


def test_cli_reads_metrics_with_basic_auth(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.state.metrics_basic = "prometheus:s3cret-metrics"  # as the front door's metrics port
    password_file = tmp_path / "metrics-password"
    password_file.write_text("s3cret-metrics\n")
    out = tmp_path / "bench.json"
    argv = ["bench", server.endpoint, "--concurrency", "1", "--requests", "2", "-q"]
    argv += ["--input-tokens", "8", "--output-tokens", "3", "--json", str(out)]
    argv += ["--metrics-url", server.endpoint + "/metrics"]
    assert (
        main([*argv, "--metrics-user", "prometheus", "--metrics-password-file", str(password_file)])
        == 0
    )
    document = json.loads(out.read_text())
    assert document["settings"]["metrics_auth"] is True
    assert document["levels"][0]["server_metrics"]["flagged"] is False
    assert main(argv) == 0  # without them: measured, and the check says why it is missing
    document = json.loads(out.read_text())
    assert "HTTP 401" in document["levels"][0]["server_metrics"]["error"]
    captured = capsys.readouterr()
    assert "s3cret-metrics" not in captured.out + captured.err + out.read_text()
    assert main([*argv, "--metrics-user", "prometheus"]) == 2
    assert "give --metrics-user and --metrics-password-file together" in capsys.readouterr().err


def test_cli_fails_when_every_request_of_a_level_fails(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server.state.key = KEY
    small = ["bench", server.endpoint, "--input-tokens", "8", "--output-tokens", "3"]
    monkeypatch.setenv("LLMFLEET_API_KEY", "sk-env-wrong-0000")
    code = main([*small, "--concurrency", "1", "--requests", "2", "-q"])
    captured = capsys.readouterr()
    assert code == 1
    assert "/tokenize: HTTP 401 Unauthorized" in captured.err
    assert "sk-env-wrong-0000" not in captured.out + captured.err
    monkeypatch.setenv("LLMFLEET_API_KEY", KEY)
    server.state.fail_every = 1
    code = main([*small, "--concurrency", "1", "--requests", "2", "-q"])
    captured = capsys.readouterr()
    assert code == 1
    assert "every request failed at concurrency 1" in captured.err
    assert "2 failed: HTTP 500" in captured.out
    server.state.fail_every = 0
    assert main([*small, "--concurrency", "1", "--requests", "2", "-q"]) == 0


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    endpoint = "http://127.0.0.1:9"
    for extra in (
        ["--concurrency", "0"],
        ["--requests", "0"],
        ["--input-tokens", "0"],
        ["--output-tokens", "0"],
        ["--rate", "0"],
        ["--max-in-flight", "2"],
        ["--slo", "ttft=soon"],
        ["--timeout", "0"],
        ["--metrics-url", "ftp://h/metrics"],
    ):
        assert main(["bench", endpoint, *extra]) == 2, extra
    assert main(["bench", endpoint, "--prompt", "Hello"]) == 2
    assert "--prompt is gone" in capsys.readouterr().err
    missing = tmp_path / "no-such-key"
    assert main(["bench", endpoint, "--api-key-file", str(missing)]) == 2
    assert "cannot read the API key file" in capsys.readouterr().err


def test_the_defaults_can_say_p99() -> None:
    assert bench.DEFAULT_REQUESTS >= 100


def test_secrets_stay_out_of_messages_and_settings() -> None:
    cfg = BenchConfig(
        "http://gpu-01:8080",
        api_key=KEY,
        metrics_url="http://gpu-01:9180/engine/metrics",
        metrics_auth="prometheus:s3cret",
    )
    token = base64.b64encode(b"prometheus:s3cret").decode()
    assert cfg.headers(cfg.metrics)["Authorization"] == f"Basic {token}"
    assert cfg.headers()["Authorization"] == f"Bearer {KEY}"
    assert "Authorization" not in cfg.headers("http://elsewhere:8080/tokenize")
    echoed = f"denied: Bearer {KEY}, Basic {token}, prometheus:s3cret, s3cret"
    assert cfg.redact(echoed) == "denied: Bearer ***, Basic ***, ***, ***"
    assert "s3cret" not in repr(cfg) and KEY not in repr(cfg)
    assert (cfg.settings()["api_key"], cfg.settings()["metrics_auth"]) == (True, True)
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        BenchConfig("http://gpu-01:8080", metrics_auth="no-colon")


# -- speculative decoding ----------------------------------------------------------------------


def test_read_stream_reads_what_the_draft_model_proposed_and_the_model_kept() -> None:
    events = [sse(chunk(content="Hello")), sse(chunk(content=" world"))]
    timings = {"predicted_n": 2, "draft_n": 20, "draft_n_accepted": 17}
    summary = read_stream(lines(*events, sse(chunk(timings=timings)), sse("[DONE]")))
    assert (summary.draft_tokens, summary.draft_accepted) == (20, 17)
    summary = read_stream(lines(*events, sse(chunk(timings={"predicted_n": 2})), sse("[DONE]")))
    assert (summary.draft_tokens, summary.draft_accepted) == (None, None)


def test_a_level_reports_the_acceptance_of_the_draft_model(server: FakeServer) -> None:
    # each request: 30 tokens drafted, 24 kept, in 6 drafts; 4 requests: 120 drafted, 96
    # kept (80 %), 24 drafts, so each check of a draft gave 1 + 96 / 24 = 5 tokens
    server.state.draft_n, server.state.draft_accepted, server.state.drafts = 30, 24, 6
    level = run_level(config(server, requests=4, output_tokens=8), Level(concurrency=2))
    assert level["speculative"] == {
        "source": "timings",
        "requests": 4,
        "draft_tokens": 120,
        "accepted_tokens": 96,
        "acceptance_rate": 0.8,
        "drafts": 24,
        "mean_accepted_length": 5.0,
    }
    check = level["server_metrics"]
    assert check["draft_tokens"] == {
        "client": 120,
        "server": 120,
        "relative_difference": 0.0,
        "flagged": False,
    }
    assert (check["accepted_draft_tokens"]["client"], check["accepted_draft_tokens"]["server"]) == (
        96,
        96,
    )
    assert (check["drafts"], check["flagged"]) == (24, False)
    report = format_report(document_of(level))
    assert re.search(r"concurrency 2\s+4\s+120\s+96\s+80\.0%\s+24\s+5\.00", report)
    assert re.search(r"concurrency 2\s+drafted\s+120\s+120\s+\+0\.00%\s+ok", report)
    assert re.search(r"concurrency 2\s+draft accepted\s+96\s+96\s+\+0\.00%\s+ok", report)


def test_a_level_without_speculative_decoding_says_nothing_of_drafts(server: FakeServer) -> None:
    level = run_level(config(server), Level(concurrency=1))
    assert level["speculative"] is None
    assert level["server_metrics"]["draft_tokens"]["server"] == 0  # counted, and still
    report = format_report(document_of(level))
    assert "speculative decoding" not in report and "drafted" not in report
    server.state.draft_counters = False  # a server that does not count drafts at all
    level = run_level(config(server), Level(concurrency=1))
    assert level["speculative"] is None
    assert level["server_metrics"]["draft_tokens"] is None
    assert level["server_metrics"]["flagged"] is False


def test_drafts_the_responses_do_not_tell_come_from_the_counters(server: FakeServer) -> None:
    server.state.draft_n, server.state.draft_accepted, server.state.drafts = 10, 5, 5
    server.state.draft_timings = False  # e.g. a proxy that keeps only the OpenAI fields
    level = run_level(config(server, requests=2), Level(concurrency=1))
    assert level["speculative"] == {
        "source": "metrics",
        "requests": 0,
        "draft_tokens": 20,
        "accepted_tokens": 10,
        "acceptance_rate": 0.5,
        "drafts": 10,
        "mean_accepted_length": 2.0,  # 1 + 10 / 10
    }
    assert level["server_metrics"]["draft_tokens"]["flagged"] is True  # 0 said, 20 counted
    report = format_report(document_of(level))
    assert "no response said what it drafted" in report


def test_the_schema_holds_with_drafts_and_for_documents_from_before_them(
    server: FakeServer,
) -> None:
    server.state.draft_n, server.state.draft_accepted, server.state.drafts = 12, 12, 3
    document = run_benchmark(config(server))
    validate(document)
    older = json.loads(json.dumps(document))  # as written before speculative decoding
    for level in older["levels"]:
        del level["speculative"]
        for key in ("draft_tokens", "accepted_draft_tokens", "drafts"):
            del level["server_metrics"][key]
    validate(older)
    assert "speculative decoding" not in format_report(older)
    broken = json.loads(json.dumps(document))
    broken["levels"][0]["speculative"]["acceptance_rate"] = 1.5
    validator = compile_schema(json.loads(SCHEMA_FILE.read_text()))
    assert [problem.path for problem in check(validator, broken)] == [("levels", 0, "speculative")]


# -- two results side by side ------------------------------------------------------------------


def measured(document: dict[str, Any], figures: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """`document` with each named level's figures set by hand: (output tokens/s, TPOT p50, TPOT
    mean, acceptance rate or None)."""
    document = json.loads(json.dumps(document))
    for level in document["levels"]:
        tokens, p50, tpot_mean, acceptance = figures[level["name"]]
        level["throughput"]["output_tokens_per_s"] = tokens
        level["tpot_s"].update({"p50": p50, "mean": tpot_mean})
        level["speculative"] = (
            None
            if acceptance is None
            else {
                "source": "timings",
                "requests": level["succeeded"],
                "draft_tokens": 100,
                "accepted_tokens": round(100 * acceptance),
                "acceptance_rate": acceptance,
                "drafts": None,
                "mean_accepted_length": None,
            }
        )
    return document


@pytest.fixture
def two_runs(server: FakeServer) -> tuple[dict[str, Any], dict[str, Any]]:
    """A baseline and a candidate at concurrency 1 and 4, with figures set by hand."""
    cfg = config(server, levels=(Level(concurrency=1), Level(concurrency=4)), requests=2)
    document = run_benchmark(cfg)
    baseline = measured(
        document,
        {"concurrency 1": (20.0, 0.05, 0.051, None), "concurrency 4": (50.0, None, 0.08, None)},
    )
    candidate = measured(
        document,
        {"concurrency 1": (30.0, 0.032, 0.033, 0.8), "concurrency 4": (45.0, 0.1, 0.1, 0.75)},
    )
    return baseline, candidate


def test_compare_gives_the_ratios_per_level(
    two_runs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    baseline, candidate = two_runs
    result = compare(baseline, candidate, "base.json", "spec.json")
    compare_validator = compile_schema(json.loads(COMPARE_SCHEMA_FILE.read_text()))
    assert check(compare_validator, json.loads(json.dumps(result))) == []
    first, second = result["levels"]
    # concurrency 1: 30 / 20 tokens/s = 1.5; TPOT p50 32 / 50 ms = 0.64
    assert (first["name"], first["tpot_basis"]) == ("concurrency 1", "p50")
    assert (first["output_tokens_per_s_ratio"], first["tpot_ratio"]) == (1.5, 0.64)
    assert (first["baseline"]["acceptance_rate"], first["candidate"]["acceptance_rate"]) == (
        None,
        0.8,
    )
    # concurrency 4: the baseline has no p50, so both means: 100 / 80 ms = 1.25; 45 / 50 = 0.9
    assert (second["tpot_basis"], second["tpot_ratio"]) == ("mean", 1.25)
    assert second["output_tokens_per_s_ratio"] == 0.9
    assert (second["baseline"]["tpot_s"], second["candidate"]["tpot_s"]) == (0.08, 0.1)
    assert result["workload_differences"] == []
    assert result["baseline"]["file"] == "base.json"
    text = format_comparison(result)
    assert re.search(
        r"concurrency 1\s+20\.0\s+30\.0\s+1\.500x\s+50\.0\s+32\.0\s+0\.640x\s+-\s+80\.0%", text
    )
    assert re.search(
        r"concurrency 4\s+50\.0\s+45\.0\s+0\.900x\s+80\.0 \(mean\)\s+100\.0 \(mean\)\s+1\.250x",
        text,
    )
    assert "TPOT below 1 are faster" in text and "WORKLOADS DIFFER" not in text


def test_compare_names_different_workloads_and_unmatched_levels(
    two_runs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    baseline, candidate = two_runs
    candidate["settings"]["output_tokens"] = 64
    candidate["levels"][1]["name"] = "concurrency 8"
    result = compare(baseline, candidate)
    assert result["workload_differences"] == ["output_tokens: 6 (baseline) vs 64 (candidate)"]
    assert [level["name"] for level in result["levels"]] == ["concurrency 1"]
    assert (result["only_in_baseline"], result["only_in_candidate"]) == (
        ["concurrency 4"],
        ["concurrency 8"],
    )
    text = format_comparison(result)
    assert "WORKLOADS DIFFER" in text and "output_tokens: 6 (baseline) vs 64" in text
    assert "only in the baseline: concurrency 4" in text
    zero = compare(
        measured(
            baseline,
            {"concurrency 1": (0.0, 0.05, 0.05, None), "concurrency 4": (None, None, None, None)},
        ),
        baseline,
    )
    assert zero["levels"][0]["output_tokens_per_s_ratio"] is None  # no ratio to 0 tokens/s
    assert zero["levels"][1]["tpot_ratio"] is None


def test_load_bench_refuses_what_is_not_a_bench_result(
    tmp_path: Path, two_runs: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(two_runs[0]))
    assert load_bench(good)["levels"][0]["throughput"]["output_tokens_per_s"] == 20.0
    cases = {
        "missing.json": (None, "cannot be read"),
        "text.json": ("not json", "not JSON"),
        "other.json": (json.dumps({"schema": "llmfleet.bench/1"}), "schema is 'llmfleet.bench/1'"),
        "broken.json": (
            json.dumps({**two_runs[0], "levels": "none"}),
            "not a valid llmfleet.bench/2 document: levels",
        ),
    }
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_text(content)
        with pytest.raises(CompareError, match=re.escape(message)):
            load_bench(tmp_path / name)


def test_cli_bench_compare_and_bench_baseline(
    server: FakeServer,
    tmp_path: Path,
    two_runs: tuple[dict[str, Any], dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, spec = tmp_path / "base.json", tmp_path / "spec.json"
    base.write_text(json.dumps(two_runs[0]))
    spec.write_text(json.dumps(two_runs[1]))
    out = tmp_path / "compare.json"
    assert main(["bench-compare", str(base), str(spec), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"baseline    {base}: " in printed and "1.500x" in printed
    assert json.loads(out.read_text())["levels"][0]["tpot_ratio"] == 0.64
    assert main(["bench-compare", str(base), str(tmp_path / "nothing.json")]) == 2
    assert "nothing.json: cannot be read" in capsys.readouterr().err
    # a run compared with a baseline as it ends; a bad baseline stops it before any request
    sent = server.state.count
    argv = ["bench", server.endpoint, "--concurrency", "1,4", "--requests", "2", "-q"]
    argv += ["--input-tokens", "16", "--output-tokens", "6"]
    assert main([*argv, "--baseline", str(tmp_path / "nothing.json")]) == 2
    assert server.state.count == sent
    assert main([*argv, "--baseline", str(base)]) == 0
    printed = capsys.readouterr().out
    assert f"baseline    {base}: " in printed
    assert re.search(r"concurrency 1\s+20\.0\s+\d+\.\d\s+\d+\.\d+x", printed)
