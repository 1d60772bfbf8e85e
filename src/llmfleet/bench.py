"""`llmfleet bench`: measure an OpenAI-compatible chat endpoint under load.

One timed request says little about a serving endpoint. This sends a bounded
series of streaming chat completions (``"stream": true``) at each concurrency
level and reports, per level, latency and time to first token (p50, p99),
tokens per second (mean per request and aggregate) and requests per second.

Per request it measures:

- time to first token (TTFT): from sending the request to the first SSE
  ``data:`` chunk whose ``choices[0].delta.content`` is a non-empty string;
- latency: from sending the request to ``data: [DONE]``;
- completion tokens: ``timings.predicted_n`` of the last chunk (llama-server),
  else ``usage.completion_tokens`` (asked for with
  ``"stream_options": {"include_usage": true}``), else the number of content
  chunks;
- the HTTP status, and the reason when it failed (connection error, HTTP 4xx
  or 5xx, a malformed or cut stream, a timeout).

Bounds: a level sends at most ``requests`` requests and starts none after its
``time_limit_s``; each socket wait ends by ``timeout_s`` and no line of a stream
is read after ``timeout_s``, so a request ends within ``2 * timeout_s``. So a run
always stops by itself, within about ``len(levels) * (time_limit_s + 2 * timeout_s)``
plus the warm-up request.

Percentiles use linear interpolation between the closest ranks (the method of
numpy's default ``"linear"``, Excel's ``PERCENTILE.INC`` and
``statistics.quantiles(method="inclusive")``): for sorted values
``x[0..n-1]`` and ``p`` in [0, 100], the rank is ``r = p / 100 * (n - 1)`` and
the percentile ``x[floor(r)] + (r - floor(r)) * (x[floor(r) + 1] - x[floor(r)])``.
With 20 samples, p99 lies between the two slowest requests.
"""

from __future__ import annotations

import http.client
import json
import math
import ssl
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from llmfleet.report import format_table

DEFAULT_PROMPT = (
    "Explain in three short sentences why a datacenter keeps its servers' clocks in sync."
)
DEFAULT_CONCURRENCY = (1, 4)
DEFAULT_REQUESTS = 20
DEFAULT_MAX_TOKENS = 64
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_TIME_LIMIT_S = 300.0
#: How many distinct failure reasons a level keeps (with their counts).
MAX_REASONS = 5
#: How much of an error response's body goes into its reason.
MAX_BODY = 300
PERCENTILE_METHOD = "linear interpolation between closest ranks (numpy 'linear', PERCENTILE.INC)"
CHAT_PATH = "/v1/chat/completions"


# -- statistics: pure functions ------------------------------------------------------------------


def percentile(values: Iterable[float], p: float) -> float | None:
    """The p-th percentile (0..100) by linear interpolation between closest ranks; None if empty."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0 and 100, not {p}")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = p / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def mean(values: Iterable[float]) -> float | None:
    """The arithmetic mean; None if empty."""
    values = list(values)
    return statistics.fmean(values) if values else None


# -- one request -----------------------------------------------------------------------------------


@dataclass
class RequestResult:
    """What one request measured. Times are seconds from sending the request."""

    ok: bool
    status: int | None = None
    latency_s: float | None = None
    ttft_s: float | None = None
    completion_tokens: int = 0
    token_source: str | None = None  # "timings", "usage" or "chunks"
    server_tokens_per_s: float | None = None  # llama-server's timings.predicted_per_second
    model: str | None = None
    error: str | None = None

    @property
    def tokens_per_s(self) -> float | None:
        """Completion tokens over the whole latency, as the client saw it."""
        if not self.ok or not self.latency_s or self.completion_tokens <= 0:
            return None
        return self.completion_tokens / self.latency_s


class StreamError(Exception):
    """The response was not the SSE stream of a chat completion."""


@dataclass
class StreamSummary:
    """What a complete SSE stream said, without the times."""

    content_chunks: int = 0
    completion_tokens: int = 0
    token_source: str = "chunks"
    server_tokens_per_s: float | None = None
    model: str | None = None


def sse_events(lines: Iterable[bytes]) -> Iterator[str]:
    """The data of each server-sent event: ``data:`` lines joined, events ended by a blank line."""
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):  # a comment (keep-alive)
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:  # a last event without its blank line
        yield "\n".join(data)


def chunk_content(chunk: dict[str, Any]) -> str:
    """``choices[0].delta.content`` of a chunk, or "" when it has none."""
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message") or json.dumps(error)[:MAX_BODY]
        code = error.get("code")
        return f"{code}: {message}" if code is not None else str(message)
    return str(error)[:MAX_BODY]


def read_stream(
    lines: Iterable[bytes],
    on_first_token: Callable[[], None] = lambda: None,
) -> StreamSummary:
    """Read a chat completion's SSE stream up to ``data: [DONE]``.

    Calls ``on_first_token`` at the first chunk with non-empty delta content.
    Raises StreamError when a chunk is not JSON, the server sends an error, or
    the stream ends before ``[DONE]``.
    """
    summary = StreamSummary()
    usage_tokens: int | None = None
    timings_tokens: int | None = None
    for data in sse_events(lines):
        if data.strip() == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            raise StreamError(
                f"malformed stream: a data chunk is not JSON: {data[:80]!r}"
            ) from None
        if not isinstance(chunk, dict):
            raise StreamError(f"malformed stream: a data chunk is not an object: {data[:80]!r}")
        if "error" in chunk:
            raise StreamError(f"error in stream: {_error_text(chunk['error'])}")
        if summary.model is None and isinstance(chunk.get("model"), str):
            summary.model = chunk["model"]
        if chunk_content(chunk):
            if summary.content_chunks == 0:
                on_first_token()
            summary.content_chunks += 1
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            usage_tokens = usage["completion_tokens"]
        timings = chunk.get("timings")
        if isinstance(timings, dict):
            if isinstance(timings.get("predicted_n"), int):
                timings_tokens = timings["predicted_n"]
            if isinstance(timings.get("predicted_per_second"), int | float):
                summary.server_tokens_per_s = float(timings["predicted_per_second"])
    else:
        raise StreamError("malformed stream: it ended before data: [DONE]")
    if timings_tokens is not None:
        summary.completion_tokens, summary.token_source = timings_tokens, "timings"
    elif usage_tokens is not None:
        summary.completion_tokens, summary.token_source = usage_tokens, "usage"
    else:
        summary.completion_tokens, summary.token_source = summary.content_chunks, "chunks"
    return summary


def chat_url(endpoint: str) -> str:
    """The chat completions URL of an endpoint (``http://host:port`` or a full URL)."""
    endpoint = endpoint.strip()
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) endpoint: {endpoint}")
    path = parts.path.rstrip("/")
    if path.endswith("/chat/completions"):
        pass
    elif path.endswith("/v1"):
        path += "/chat/completions"
    else:
        path += CHAT_PATH
    return f"{parts.scheme}://{parts.netloc}{path}"


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run needs. The API key is used in the header only and never reported."""

    endpoint: str
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    requests: int = DEFAULT_REQUESTS
    max_tokens: int = DEFAULT_MAX_TOKENS
    prompt: str = DEFAULT_PROMPT
    timeout_s: float = DEFAULT_TIMEOUT_S
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    model: str | None = None
    warmup: bool = True
    api_key: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return chat_url(self.endpoint)

    def body(self) -> bytes:
        payload: dict[str, Any] = {
            "messages": [{"role": "user", "content": self.prompt}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.model:
            payload["model"] = self.model
        return json.dumps(payload).encode()

    def headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "User-Agent": "llmfleet-bench",
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def settings(self) -> dict[str, Any]:
        """The settings as reported (no key, only whether one was sent)."""
        return {
            "concurrency": list(self.concurrency),
            "requests_per_level": self.requests,
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "prompt": self.prompt,
            "model": self.model,
            "timeout_s": self.timeout_s,
            "time_limit_s": self.time_limit_s,
            "warmup": self.warmup,
            "api_key": bool(self.api_key),
            "percentile_method": PERCENTILE_METHOD,
        }


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _timed_lines(response: http.client.HTTPResponse, deadline: float) -> Iterator[bytes]:
    """The response's lines, until ``deadline`` (monotonic).

    Each read waits at most the connection's timeout; the deadline is checked
    between lines. The socket's timeout is not changed while the response is
    read: doing that per line made ``readline`` return end-of-file early now
    and then (1 to 2 streams in 150 over a Docker network), as if the server
    had cut the stream.
    """
    while True:
        if deadline - time.monotonic() <= 0:
            raise TimeoutError
        line = response.readline(65536)
        if not line:
            return
        yield line


def send_request(config: BenchConfig) -> RequestResult:
    """Send one streaming chat completion and measure it. Never raises for a failed request."""
    url = urlsplit(config.url)
    connection_class = (
        http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    )
    kwargs: dict[str, Any] = {"timeout": config.timeout_s}
    if url.scheme == "https":
        kwargs["context"] = ssl.create_default_context()
    connection = connection_class(url.hostname or "", url.port, **kwargs)
    started = time.monotonic()
    deadline = started + config.timeout_s
    first_token: list[float] = []
    status: int | None = None
    try:
        connection.request("POST", url.path, body=config.body(), headers=config.headers())
        response = connection.getresponse()
        status = response.status
        if status != 200:
            error = _redact(_http_error(response), config.api_key)
            return RequestResult(ok=False, status=status, error=error)
        summary = read_stream(
            _timed_lines(response, deadline),
            on_first_token=lambda: first_token.append(time.monotonic() - started),
        )
        latency = time.monotonic() - started
        return RequestResult(
            ok=True,
            status=status,
            latency_s=latency,
            ttft_s=first_token[0] if first_token else None,
            completion_tokens=summary.completion_tokens,
            token_source=summary.token_source,
            server_tokens_per_s=summary.server_tokens_per_s,
            model=summary.model,
        )
    except StreamError as exc:
        return RequestResult(ok=False, status=status, error=_redact(str(exc), config.api_key))
    except TimeoutError:
        error = f"timed out after {config.timeout_s:g} s"
        return RequestResult(ok=False, status=status, error=error)
    except ConnectionRefusedError:
        return RequestResult(ok=False, status=status, error="connection refused")
    except (OSError, http.client.HTTPException) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return RequestResult(ok=False, status=status, error=_redact(reason, config.api_key))
    finally:
        connection.close()


def _http_error(response: http.client.HTTPResponse) -> str:
    """'HTTP 401: message' from an error response (its JSON error message when it has one)."""
    try:
        body = response.read(4096).decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException):
        body = ""
    message = body.strip()
    try:
        document = json.loads(body)
    except ValueError:
        pass
    else:
        if isinstance(document, dict) and "error" in document:
            error = document["error"]
            message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
    message = " ".join(message.split())[:MAX_BODY]
    head = f"HTTP {response.status} {response.reason}".rstrip()
    return f"{head}: {message}" if message else head


# -- a level, and the whole run --------------------------------------------------------------------


@dataclass
class LevelRun:
    """The raw outcome of one concurrency level."""

    concurrency: int
    results: list[RequestResult]
    wall_s: float
    stopped_by: str  # "count" or "time_limit"


def run_level(
    config: BenchConfig,
    concurrency: int,
    send: Callable[[BenchConfig], RequestResult] = send_request,
) -> LevelRun:
    """Send up to ``config.requests`` requests, ``concurrency`` at a time, none after the limit."""
    lock = threading.Lock()
    issued = 0
    stopped_by = "count"
    results: list[RequestResult] = []
    started = time.monotonic()
    limit = started + config.time_limit_s

    def worker() -> None:
        nonlocal issued, stopped_by
        while True:
            with lock:
                if issued >= config.requests:
                    return
                if time.monotonic() >= limit:
                    stopped_by = "time_limit"
                    return
                issued += 1
            result = send(config)
            with lock:
                results.append(result)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench") as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return LevelRun(concurrency, results, time.monotonic() - started, stopped_by)


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def summarize_level(level: LevelRun) -> dict[str, Any]:
    """One level's figures, as they go into the JSON document."""
    ok = [r for r in level.results if r.ok]
    failed = [r for r in level.results if not r.ok]
    latencies = [r.latency_s for r in ok if r.latency_s is not None]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    rates = [rate for rate in (r.tokens_per_s for r in ok) if rate is not None]
    server_rates = [r.server_tokens_per_s for r in ok if r.server_tokens_per_s is not None]
    tokens = sum(r.completion_tokens for r in ok)
    reasons = Counter(r.error or "unknown error" for r in failed)
    sources = sorted({r.token_source for r in ok if r.token_source})
    wall = level.wall_s
    return {
        "concurrency": level.concurrency,
        "requests": len(level.results),
        "succeeded": len(ok),
        "failed": len(failed),
        "stopped_by": level.stopped_by,
        "wall_s": _rounded(wall),
        "latency_s": {
            "p50": _rounded(percentile(latencies, 50)),
            "p99": _rounded(percentile(latencies, 99)),
            "mean": _rounded(mean(latencies)),
            "min": _rounded(min(latencies, default=None)),
            "max": _rounded(max(latencies, default=None)),
        },
        "ttft_s": {
            "p50": _rounded(percentile(ttfts, 50)),
            "p99": _rounded(percentile(ttfts, 99)),
            "mean": _rounded(mean(ttfts)),
        },
        "completion_tokens": tokens,
        "token_count_source": "+".join(sources) if sources else None,
        "tokens_per_s": {
            "mean": _rounded(mean(rates), 2),
            "aggregate": _rounded(tokens / wall, 2) if wall > 0 and ok else None,
            "server_mean": _rounded(mean(server_rates), 2),
        },
        "requests_per_s": _rounded(len(ok) / wall, 3) if wall > 0 else None,
        "errors": [
            {"reason": reason, "count": count} for reason, count in reasons.most_common(MAX_REASONS)
        ],
        "errors_left_out": max(len(reasons) - MAX_REASONS, 0),
    }


def run_benchmark(
    config: BenchConfig,
    send: Callable[[BenchConfig], RequestResult] = send_request,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Warm up once (not counted), then run every concurrency level; the JSON document."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    warmup: RequestResult | None = None
    if config.warmup:
        progress("warm-up request")
        warmup = send(config)
    levels = []
    model = warmup.model if warmup and warmup.ok else None
    for concurrency in config.concurrency:
        progress(f"concurrency {concurrency}: up to {config.requests} requests")
        level = run_level(config, concurrency, send)
        levels.append(summarize_level(level))
        model = model or next((r.model for r in level.results if r.model), None)
    return {
        "endpoint": config.endpoint,
        "url": config.url,
        "model": model,
        "started_at": started_at,
        "settings": config.settings(),
        "warmup": None if warmup is None else _warmup_dict(warmup),
        "levels": levels,
    }


def _warmup_dict(result: RequestResult) -> dict[str, Any]:
    data = asdict(result)
    return {
        key: _rounded(data[key]) if key.endswith("_s") else data[key]
        for key in ("ok", "status", "latency_s", "ttft_s", "completion_tokens", "error")
    }


def all_failed_levels(document: dict[str, Any]) -> list[int]:
    """Concurrency of each level in which no request succeeded."""
    return [level["concurrency"] for level in document["levels"] if level["succeeded"] == 0]


# -- output ----------------------------------------------------------------------------------------

TABLE_COLUMNS = (
    "conc",
    "sent",
    "failed",
    "p50 ms",
    "p99 ms",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "tok/s mean",
    "tok/s total",
    "req/s",
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_report(document: dict[str, Any]) -> str:
    """The plain-text report: a header, one table row per level, then the failure reasons."""
    settings = document["settings"]
    lines = [
        f"endpoint  {document['url']}",
        f"model     {document['model'] or '-'}",
        f"settings  {settings['requests_per_level']} requests per level, "
        f"max_tokens {settings['max_tokens']}, temperature 0, "
        f"timeout {settings['timeout_s']:g} s, time limit {settings['time_limit_s']:g} s per level",
        "",
    ]
    rows: list[tuple[str, ...]] = []
    for level in document["levels"]:
        rows.append(
            (
                str(level["concurrency"]),
                str(level["requests"]),
                str(level["failed"]),
                _ms(level["latency_s"]["p50"]),
                _ms(level["latency_s"]["p99"]),
                _ms(level["ttft_s"]["p50"]),
                _ms(level["ttft_s"]["p99"]),
                _num(level["tokens_per_s"]["mean"]),
                _num(level["tokens_per_s"]["aggregate"]),
                _num(level["requests_per_s"], 2),
            )
        )
    lines.append(format_table(rows, TABLE_COLUMNS))
    notes = []
    for level in document["levels"]:
        if level["stopped_by"] == "time_limit":
            notes.append(f"concurrency {level['concurrency']}: stopped by the time limit")
        notes.extend(
            f"concurrency {level['concurrency']}: {error['count']} failed: {error['reason']}"
            for error in level["errors"]
        )
    if notes:
        lines.extend(["", *notes])
    return "\n".join(lines)


def parse_concurrency(text: str) -> tuple[int, ...]:
    """'1,4,8' -> (1, 4, 8); each level a positive integer."""
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"concurrency must be integers separated by commas, not {text!r}"
        ) from None
    if not levels or any(level < 1 for level in levels):
        raise ValueError(f"concurrency levels must be 1 or more, not {text!r}")
    return levels
