"""`llmfleet bench`: measure an OpenAI-compatible chat endpoint (llama-server) under load.

What it does, per level (a fixed concurrency, or an open-loop request rate):

1. builds one prompt per request, each distinct and of exactly ``input_tokens`` tokens by
   the server's own ``POST /tokenize`` (`llmfleet.bench_prompts`), so llama-server's prompt
   cache cannot turn TTFT into one token's time;
2. reads the server's counters (``GET /metrics``: ``llamacpp:prompt_tokens_total``,
   ``llamacpp:tokens_predicted_total``, ``llamacpp:prompt_tokens_cached_total``);
3. sends ``requests`` streaming chat completions (``"stream": true``) with
   ``max_tokens = output_tokens`` and ``"ignore_eos": true`` (llama-server's; vLLM takes it
   too), so every answer has the same length on every host and version; at a fixed
   concurrency ``N`` requests are in flight at all times (closed loop), at a rate they are
   sent at the times of a seeded Poisson process whatever the server does (open loop, as
   vLLM's ``--request-rate``), at most ``max_in_flight`` at once when set;
4. reads the counters again and checks the responses' token counts (and draft tokens,
   with speculative decoding) against their growth (`llmfleet.bench_stats.cross_check`),
   flagging a difference over 1 %: other traffic on the server, a proxy that retried, the
   wrong engine behind the metrics URL;
5. reports TTFT, TPOT, ITL and end-to-end latency as distributions (mean, min, max, p50,
   p90, p99), throughput, and goodput against the user's objectives. The definitions, the
   percentile method and the rule on how many samples a percentile needs are in
   `llmfleet.bench_stats`.

Thinking counts as output: a chunk's ``delta.reasoning_content`` is generated text as much
as ``delta.content``, so TTFT is the first token of either.

Bounds: a level sends at most ``requests`` requests and starts none after ``time_limit_s``;
each socket wait ends by ``timeout_s`` and no line of a stream is read after ``timeout_s``,
so a request ends within ``2 * timeout_s`` and a run always stops by itself.

`run_level` runs one level against one endpoint and returns the level's dictionary (as in
``levels[]`` below): the entry point for a tuner. `run_benchmark` warms up and runs them all.

The result document (schema ``llmfleet.bench/2``; the JSON Schema is
``llmfleet/schemas/bench-2.schema.json``, seconds everywhere, ``null`` for what could not be
measured)::

    schema       "llmfleet.bench/2"
    tool         "llmfleet <version>"
    endpoint     as given; url: the chat completions URL; model: as the server named it
    started_at   ISO 8601, UTC
    settings     requests_per_level, input_tokens, output_tokens, ignore_eos, temperature,
                 seed, prompt_cache, model, timeout_s, time_limit_s, warmup, api_key (bool),
                 metrics_url (null: not read), metrics_auth (bool), objectives {metric: limit_s},
                 levels [{mode, concurrency, rate, max_in_flight}],
                 percentiles {method, rule, min_samples {p50: 2, p90: 10, p99: 100}}
    warmup       null, or {ok, status, e2e_s, ttft_s, completion_tokens, error}
    levels[]     name ("concurrency 4", "rate 2/s"), mode ("concurrency" | "rate"),
                 concurrency (int | null), rate (per second | null), max_in_flight,
                 requests (sent), succeeded, failed, stopped_by ("count" | "time_limit"),
                 wall_s (first send to last answer), model (as the answers named it),
                 input_tokens {per_request, prompt_tokens_mean, cached_tokens},
                 output_tokens {per_request, total, short, token_source, content_chunks,
                                reasoning_chunks},
                 ttft_s, tpot_s, itl_s, e2e_s: {n, mean, min, max, p50, p90, p99}
                     (a percentile is null when n is below its min_samples),
                 throughput {requests_per_s, output_tokens_per_s, total_tokens_per_s,
                             server_output_tokens_per_s_mean},
                 goodput: null without objectives, else
                     {objectives, good, sent, fraction, requests_per_s},
                 arrival_lag_s: null at a fixed concurrency, else {n, mean, max}
                     (how late requests left against their Poisson send times),
                 speculative: null without speculative decoding, else {source
                     ("timings" | "metrics"), requests (that said they drafted),
                     draft_tokens, accepted_tokens, acceptance_rate (accepted / drafted),
                     drafts (null: not read), mean_accepted_length (1 + accepted / drafts)},
                 server_metrics: null when not read, else {url, error, tolerance,
                     prompt_tokens {client, server, relative_difference, flagged, basis},
                     output_tokens {client, server, relative_difference, flagged},
                     draft_tokens, accepted_draft_tokens: null when the server does not
                         count drafts, else as output_tokens,
                     drafts (the server's count of drafts checked, or null),
                     problems [text], flagged},
                 errors [{reason, count}], errors_left_out

``levels[].speculative`` and the draft entries of ``server_metrics`` came after the first
documents of ``llmfleet.bench/2``: a reader takes a level without them as one without
speculative decoding (the schema has them optional; the version did not change, as every
older document still holds).

Speculative decoding (a draft model proposes tokens, the model checks them in one batch):
llama-server's last ``timings`` of a response say ``draft_n`` (tokens drafted) and
``draft_n_accepted`` (kept), and /metrics counts the same
(``llamacpp:spec_decode_num_draft_tokens_total``, ``..._accepted_tokens_total``) and the
drafts checked (``..._drafts_total``); the check compares them as it does the tokens. The
speedup of a draft model is two runs side by side: ``--baseline`` (or ``llmfleet
bench-compare``, `llmfleet.bench_compare`) gives the ratio of tokens per second and TPOT.

Only successful requests enter the distributions, the throughput and the client's token
counts; ``levels[].failed`` counts the rest (HTTP errors, cut or malformed streams,
timeouts, refused connections).
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from llmfleet import __version__
from llmfleet.bench_prompts import PromptError, exact_prompt
from llmfleet.bench_stats import (
    PERCENTILE_METHOD,
    PERCENTILES,
    SAMPLE_RULE,
    ClientTokens,
    Objective,
    acceptance_rate,
    cross_check,
    distribution,
    goodput,
    inter_token_latencies,
    mean,
    mean_accepted_length,
    min_samples,
    parse_metrics,
    percentile_key,
    poisson_arrivals,
    tpot,
)
from llmfleet.report import format_table

SCHEMA = "llmfleet.bench/2"
SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "bench-2.schema.json"
DEFAULT_CONCURRENCY = (1, 4)
#: p99 needs 100 samples (`llmfleet.bench_stats.min_samples`).
DEFAULT_REQUESTS = 100
DEFAULT_INPUT_TOKENS = 512
DEFAULT_MAX_TOKENS = 128  # the output tokens of every request
DEFAULT_SEED = 0
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_TIME_LIMIT_S = 600.0
#: How many distinct failure reasons a level keeps (with their counts).
MAX_REASONS = 5
#: How much of an error response's body goes into its reason.
MAX_BODY = 300
CHAT_PATH = "/v1/chat/completions"
#: A level notes prompt-cache hits above this share of its prompt tokens: more than the chat
#: template's head a slot keeps (a quarter of a 64-token prompt with SmolLM2's template).
CACHED_NOTE_SHARE = 0.5


class BenchError(Exception):
    """The benchmark cannot go on (e.g. the prompts cannot be built); a message to act on."""


# -- URLs --------------------------------------------------------------------------------------


def _split(endpoint: str) -> SplitResult:
    endpoint = endpoint.strip()
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) endpoint: {endpoint}")
    return parts


def base_url(endpoint: str) -> str:
    """The server's root: the endpoint without ``/v1`` or ``/v1/chat/completions``."""
    parts = _split(endpoint)
    path = parts.path.rstrip("/")
    for suffix in ("/chat/completions", "/v1"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return f"{parts.scheme}://{parts.netloc}{path}"


def chat_url(endpoint: str) -> str:
    """The chat completions URL of an endpoint (``http://host:port`` or a full URL)."""
    parts = _split(endpoint)
    path = parts.path.rstrip("/")
    if path.endswith("/chat/completions"):
        return f"{parts.scheme}://{parts.netloc}{path}"
    if path.endswith("/v1"):
        return f"{parts.scheme}://{parts.netloc}{path}/chat/completions"
    return f"{parts.scheme}://{parts.netloc}{path}{CHAT_PATH}"


def default_metrics_url(endpoint: str) -> str:
    """llama-server's ``/metrics`` beside the endpoint (the front door passes it, with the key,
    to the engine; its metrics port serves it at ``http://HOST:9180/engine/metrics``)."""
    return base_url(endpoint) + "/metrics"


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One level: `concurrency` requests always in flight, or `rate` requests per second
    arriving as a Poisson process (at most `max_in_flight` at once when set)."""

    concurrency: int | None = None
    rate: float | None = None
    max_in_flight: int | None = None

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("a level has a concurrency or a rate, not both and not neither")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"a concurrency must be 1 or more, not {self.concurrency}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"a request rate must be more than 0, not {self.rate}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max in flight must be 1 or more, not {self.max_in_flight}")

    @property
    def mode(self) -> str:
        return "concurrency" if self.concurrency is not None else "rate"

    @property
    def name(self) -> str:
        if self.concurrency is not None:
            return f"concurrency {self.concurrency}"
        cap = f" (max {self.max_in_flight})" if self.max_in_flight else ""
        return f"rate {self.rate:g}/s{cap}"

    def settings(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "max_in_flight": self.max_in_flight,
        }


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run needs. The secrets are used in headers only and never reported.

    `metrics_url`: None reads `default_metrics_url`; `read_metrics` False reads none. The
    metrics are read with `metrics_auth` (``USER:PASSWORD``, HTTP basic auth) when it is set,
    as the front door's metrics port asks; otherwise with the API key, but only when the
    metrics URL names the endpoint's host. `prompt_cache` False (the
    default) sends llama-server's ``"cache_prompt": false``: every prompt is computed whole,
    whatever the server kept from earlier runs (its RAM prompt cache outlives a run, so a
    second run with the same seed would otherwise find its prompts cached).
    """

    endpoint: str
    levels: tuple[Level, ...] = tuple(Level(concurrency=n) for n in DEFAULT_CONCURRENCY)
    requests: int = DEFAULT_REQUESTS
    input_tokens: int = DEFAULT_INPUT_TOKENS
    output_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = DEFAULT_SEED
    objectives: tuple[Objective, ...] = ()
    metrics_url: str | None = None
    read_metrics: bool = True
    prompt_cache: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    model: str | None = None
    warmup: bool = True
    api_key: str | None = field(default=None, repr=False)
    metrics_auth: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("requests", "input_tokens", "output_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more, not {getattr(self, name)}")
        if self.timeout_s <= 0 or self.time_limit_s <= 0:
            raise ValueError("the timeout and the time limit must be more than 0 seconds")
        chat_url(self.endpoint)  # a ValueError now rather than in every request
        if self.metrics_url:
            _split(self.metrics_url)
        if self.metrics_auth is not None and ":" not in self.metrics_auth:
            raise ValueError("the metrics credentials must be USER:PASSWORD")

    @property
    def url(self) -> str:
        return chat_url(self.endpoint)

    @property
    def metrics(self) -> str | None:
        """The metrics URL that is read, or None."""
        if not self.read_metrics:
            return None
        return self.metrics_url or default_metrics_url(self.endpoint)

    def body(self, prompt: str) -> bytes:
        payload: dict[str, Any] = {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.output_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if not self.prompt_cache:
            payload["cache_prompt"] = False
        if self.model:
            payload["model"] = self.model
        return json.dumps(payload).encode()

    def headers(self, url: str | None = None) -> dict[str, str]:
        """Request headers; the key only for the endpoint's own host, the metrics credentials
        only for the metrics URL."""
        headers = {"User-Agent": f"llmfleet-bench/{__version__}"}
        if url is not None and url == self.metrics and self.metrics_auth:
            token = base64.b64encode(self.metrics_auth.encode()).decode()
            headers["Authorization"] = f"Basic {token}"
            return headers
        same_host = url is None or urlsplit(url).hostname == _split(self.endpoint).hostname
        if self.api_key and same_host:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def redact(self, text: str) -> str:
        """`text` without the secrets (a careless server may echo a header)."""
        secrets = [self.api_key]
        if self.metrics_auth:
            password = self.metrics_auth.partition(":")[2]
            token = base64.b64encode(self.metrics_auth.encode()).decode()
            secrets += [token, self.metrics_auth, password]
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def settings(self) -> dict[str, Any]:
        """The settings as reported (no key, only whether one was sent)."""
        return {
            "requests_per_level": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "seed": self.seed,
            "prompt_cache": self.prompt_cache,
            "model": self.model,
            "timeout_s": self.timeout_s,
            "time_limit_s": self.time_limit_s,
            "warmup": self.warmup,
            "api_key": bool(self.api_key),
            "metrics_auth": bool(self.metrics_auth),
            "metrics_url": self.metrics,
            "objectives": {objective.metric: objective.limit_s for objective in self.objectives},
            "levels": [level.settings() for level in self.levels],
            "percentiles": {
                "method": PERCENTILE_METHOD,
                "rule": SAMPLE_RULE,
                "min_samples": {percentile_key(p): min_samples(p) for p in PERCENTILES},
            },
        }


# -- plain HTTP calls (tokenize, metrics) ----------------------------------------------------------


def _connection(url: SplitResult, timeout_s: float) -> http.client.HTTPConnection:
    if url.scheme == "https":
        return http.client.HTTPSConnection(
            url.hostname or "", url.port, timeout=timeout_s, context=ssl.create_default_context()
        )
    return http.client.HTTPConnection(url.hostname or "", url.port, timeout=timeout_s)


def _call(config: BenchConfig, method: str, url: str, document: Any = None) -> tuple[int, bytes]:
    """One plain request; (status, body). Raises BenchError for a failed connection."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = config.headers(url)
    body = None
    if document is not None:
        body = json.dumps(document).encode()
        headers["Content-Type"] = "application/json"
    connection = _connection(parts, config.timeout_s)
    try:
        connection.request(method, path or "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
        reason = reason or type(exc).__name__
        raise BenchError(f"{method} {url}: {config.redact(reason)}") from None
    finally:
        connection.close()


def _error_message(status: int, body: bytes) -> str:
    """'HTTP 501: message' from an error response (its JSON error message when it has one)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        document = json.loads(text)
    except ValueError:
        pass
    else:
        if isinstance(document, dict) and "error" in document:
            error = document["error"]
            text = str(error.get("message", error)) if isinstance(error, dict) else str(error)
    text = " ".join(text.split())[:MAX_BODY]
    head = f"HTTP {status} {http.client.responses.get(status, '')}".rstrip()
    return f"{head}: {text}" if text else head


def _piece_text(piece: Any) -> str:
    if isinstance(piece, str):
        return piece
    if isinstance(piece, list) and all(isinstance(b, int) and 0 <= b < 256 for b in piece):
        return bytes(piece).decode("utf-8", errors="replace")
    raise ValueError


def tokenize(config: BenchConfig, text: str) -> list[str]:
    """The token pieces of `text` by llama-server's ``POST /tokenize`` (``with_pieces``, no
    special tokens). Raises BenchError when the server does not answer that way."""
    url = base_url(config.endpoint) + "/tokenize"
    status, body = _call(
        config, "POST", url, {"content": text, "add_special": False, "with_pieces": True}
    )
    if status != 200:
        raise BenchError(
            f"POST {url}: {config.redact(_error_message(status, body))} "
            "(exact prompt lengths need llama-server's /tokenize)"
        )
    try:
        tokens = json.loads(body)["tokens"]
        return [_piece_text(token["piece"]) for token in tokens]
    except (ValueError, KeyError, TypeError):
        raise BenchError(
            f"POST {url}: the answer is not llama-server's "
            '{"tokens": [{"id": ..., "piece": ...}]}'
        ) from None


@dataclass(frozen=True)
class Prompt:
    """The user message of one request, and its exact number of tokens."""

    index: int
    text: str
    tokens: int


def build_prompts(
    config: BenchConfig,
    first: int,
    count: int,
    tokenizer: Callable[[str], Sequence[str]] | None = None,
) -> list[Prompt]:
    """Prompts `first` .. `first + count - 1` of the run's seed, each `input_tokens` long."""
    tokenizer = tokenizer or (lambda text: tokenize(config, text))
    prompts = []
    for index in range(first, first + count):
        try:
            text = exact_prompt(tokenizer, config.seed, index, config.input_tokens)
        except PromptError as exc:
            raise BenchError(str(exc)) from None
        prompts.append(Prompt(index, text, config.input_tokens))
    return prompts


def read_metrics(config: BenchConfig) -> dict[str, float]:
    """The server's counters (`llmfleet.bench_stats.parse_metrics`). Raises BenchError."""
    url = config.metrics
    if url is None:
        raise BenchError("metrics are not read")
    status, body = _call(config, "GET", url)
    if status != 200:
        hint = " (start llama-server with --metrics, or pass --no-metrics)" if status == 501 else ""
        message = config.redact(_error_message(status, body))
        raise BenchError(f"GET {url}: {message}{hint}")
    return parse_metrics(body.decode("utf-8", errors="replace"))


# -- one request -----------------------------------------------------------------------------------


@dataclass
class RequestResult:
    """What one request measured. Times are seconds from the start of sending it."""

    ok: bool
    status: int | None = None
    latency_s: float | None = None  # end to end: to data: [DONE]
    ttft_s: float | None = None
    completion_tokens: int = 0
    token_source: str | None = None  # "usage", "timings" or "chunks"
    server_tokens_per_s: float | None = None  # llama-server's timings.predicted_per_second
    model: str | None = None
    error: str | None = None
    itl_s: list[float] = field(default_factory=list)
    input_tokens: int | None = None  # the user message's own tokens
    prompt_tokens: int | None = None  # usage.prompt_tokens: the templated prompt
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens
    prompt_processed: int | None = None  # timings.prompt_n
    content_chunks: int = 0
    reasoning_chunks: int = 0
    draft_tokens: int | None = None  # timings.draft_n (speculative decoding; None: not said)
    draft_accepted: int | None = None  # timings.draft_n_accepted
    scheduled_s: float | None = None  # open loop: the Poisson send time, from the level's start
    started_s: float | None = None  # when it was sent, from the level's start

    @property
    def tokens_per_s(self) -> float | None:
        """Completion tokens over the whole latency, as the client saw it."""
        if not self.ok or not self.latency_s or self.completion_tokens <= 0:
            return None
        return self.completion_tokens / self.latency_s

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.latency_s is None or self.ttft_s is None:
            return None
        return tpot(self.latency_s, self.ttft_s, self.completion_tokens)

    def figures(self) -> dict[str, float | None] | None:
        """What objectives judge (None for a failed request)."""
        if not self.ok:
            return None
        return {"ttft": self.ttft_s, "tpot": self.tpot_s, "e2e": self.latency_s}


class StreamError(Exception):
    """The response was not the SSE stream of a chat completion."""


@dataclass
class StreamSummary:
    """What a complete SSE stream said, and when its text arrived (clock values)."""

    token_times: list[float] = field(default_factory=list)
    content_chunks: int = 0
    reasoning_chunks: int = 0
    completion_tokens: int = 0
    token_source: str = "chunks"
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    prompt_processed: int | None = None
    server_tokens_per_s: float | None = None
    model: str | None = None
    draft_tokens: int | None = None
    draft_accepted: int | None = None


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


def chunk_text(chunk: dict[str, Any]) -> tuple[str, str]:
    """(``delta.content``, ``delta.reasoning_content``) of a chunk's first choice, "" if none."""
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "", ""
    delta = choices[0].get("delta")
    if not isinstance(delta, dict):
        return "", ""
    content, reasoning = delta.get("content"), delta.get("reasoning_content")
    return (
        content if isinstance(content, str) else "",
        reasoning if isinstance(reasoning, str) else "",
    )


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message") or json.dumps(error)[:MAX_BODY]
        code = error.get("code")
        return f"{code}: {message}" if code is not None else str(message)
    return str(error)[:MAX_BODY]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_stream(
    lines: Iterable[bytes], clock: Callable[[], float] = time.monotonic
) -> StreamSummary:
    """Read a chat completion's SSE stream up to ``data: [DONE]``.

    Notes `clock()` at each chunk that carries text (answer or thinking). Output tokens come
    from ``usage.completion_tokens``, else llama-server's ``timings.predicted_n``, else the
    number of such chunks. With speculative decoding llama-server's last ``timings`` also say
    how many tokens the draft model proposed (``draft_n``) and how many the model accepted
    (``draft_n_accepted``). Raises StreamError when a chunk is not JSON, the server sends an
    error, or the stream ends before ``[DONE]``.
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
        content, reasoning = chunk_text(chunk)
        if content or reasoning:
            summary.token_times.append(clock())
            summary.content_chunks += bool(content)
            summary.reasoning_chunks += bool(reasoning)
        if summary.model is None and isinstance(chunk.get("model"), str):
            summary.model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            usage_tokens = _int(usage.get("completion_tokens"))
            summary.prompt_tokens = _int(usage.get("prompt_tokens"))
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict):
                summary.cached_tokens = _int(details.get("cached_tokens"))
        timings = chunk.get("timings")
        if isinstance(timings, dict):
            timings_tokens = _int(timings.get("predicted_n"))
            summary.prompt_processed = _int(timings.get("prompt_n"))
            if isinstance(timings.get("predicted_per_second"), int | float):
                summary.server_tokens_per_s = float(timings["predicted_per_second"])
            # llama-server says these only for a request that drafted (speculative decoding)
            summary.draft_tokens = _int(timings.get("draft_n"))
            summary.draft_accepted = _int(timings.get("draft_n_accepted"))
    else:
        raise StreamError("malformed stream: it ended before data: [DONE]")
    chunks = len(summary.token_times)
    if usage_tokens is not None:
        summary.completion_tokens, summary.token_source = usage_tokens, "usage"
    elif timings_tokens is not None:
        summary.completion_tokens, summary.token_source = timings_tokens, "timings"
    else:
        summary.completion_tokens, summary.token_source = chunks, "chunks"
    return summary


def _timed_lines(response: http.client.HTTPResponse, deadline: float) -> Iterator[bytes]:
    """The response's lines, until ``deadline`` (monotonic).

    Each read waits at most the connection's timeout; the deadline is checked between lines.
    The socket's timeout is not changed while the response is read: doing that per line made
    ``readline`` return end-of-file early now and then (1 to 2 streams in 150 over a Docker
    network), as if the server had cut the stream.
    """
    while True:
        if deadline - time.monotonic() <= 0:
            raise TimeoutError
        line = response.readline(65536)
        if not line:
            return
        yield line


def send_request(config: BenchConfig, prompt: Prompt) -> RequestResult:
    """Send one streaming chat completion and measure it. Never raises for a failed request."""
    url = urlsplit(config.url)
    connection = _connection(url, config.timeout_s)
    headers = config.headers()
    headers.update({"Content-Type": "application/json", "Accept": "text/event-stream"})
    body = config.body(prompt.text)
    started = time.monotonic()
    deadline = started + config.timeout_s
    status: int | None = None

    def failed(error: str) -> RequestResult:
        return RequestResult(
            ok=False,
            status=status,
            error=config.redact(error),
            input_tokens=prompt.tokens,
        )

    try:
        connection.request("POST", url.path, body=body, headers=headers)
        response = connection.getresponse()
        status = response.status
        if status != 200:
            return failed(_error_message(status, response.read(4096)))
        summary = read_stream(_timed_lines(response, deadline))
        latency = time.monotonic() - started
        times = [moment - started for moment in summary.token_times]
        return RequestResult(
            ok=True,
            status=status,
            latency_s=latency,
            ttft_s=times[0] if times else None,
            completion_tokens=summary.completion_tokens,
            token_source=summary.token_source,
            server_tokens_per_s=summary.server_tokens_per_s,
            model=summary.model,
            itl_s=inter_token_latencies(times),
            input_tokens=prompt.tokens,
            prompt_tokens=summary.prompt_tokens,
            cached_tokens=summary.cached_tokens,
            prompt_processed=summary.prompt_processed,
            content_chunks=summary.content_chunks,
            reasoning_chunks=summary.reasoning_chunks,
            draft_tokens=summary.draft_tokens,
            draft_accepted=summary.draft_accepted,
        )
    except StreamError as exc:
        return failed(str(exc))
    except TimeoutError:
        return failed(f"timed out after {config.timeout_s:g} s")
    except ConnectionRefusedError:
        return failed("connection refused")
    except (OSError, http.client.HTTPException) as exc:
        return failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    finally:
        connection.close()


# -- a level ---------------------------------------------------------------------------------------

Send = Callable[[BenchConfig, Prompt], RequestResult]


@dataclass
class LevelRun:
    """The raw outcome of one level."""

    level: Level
    results: list[RequestResult]
    wall_s: float
    stopped_by: str  # "count" or "time_limit"


def drive_level(
    config: BenchConfig, level: Level, prompts: Sequence[Prompt], send: Send = send_request
) -> LevelRun:
    """Send one request per prompt: closed loop at a concurrency, open loop at a rate."""
    if level.concurrency is not None:
        return _closed_loop(config, level, prompts, send)
    return _open_loop(config, level, prompts, send)


def _closed_loop(
    config: BenchConfig, level: Level, prompts: Sequence[Prompt], send: Send
) -> LevelRun:
    """`level.concurrency` workers, each sending its next request as its last one ends."""
    lock = threading.Lock()
    queue = iter(prompts)
    stopped_by = "count"
    results: list[RequestResult] = []
    started = time.monotonic()
    limit = started + config.time_limit_s

    def worker() -> None:
        nonlocal stopped_by
        while True:
            with lock:
                prompt = next(queue, None)
                if prompt is None:
                    return
                if time.monotonic() >= limit:
                    stopped_by = "time_limit"
                    return
            sent = time.monotonic() - started
            result = send(config, prompt)
            result.started_s = sent
            with lock:
                results.append(result)

    workers = level.concurrency or 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench") as pool:
        for future in [pool.submit(worker) for _ in range(workers)]:
            future.result()
    return LevelRun(level, results, time.monotonic() - started, stopped_by)


def _open_loop(
    config: BenchConfig, level: Level, prompts: Sequence[Prompt], send: Send
) -> LevelRun:
    """Requests at the send times of a seeded Poisson process, whether or not the server keeps
    up; with `level.max_in_flight`, a request waits for a free place (its lag says how long)."""
    assert level.rate is not None
    seed = f"llmfleet-bench:{config.seed}:rate:{level.rate!r}"
    arrivals = poisson_arrivals(level.rate, len(prompts), seed)
    results: list[RequestResult] = []
    lock = threading.Lock()
    stopped_by = "count"
    workers = level.max_in_flight or max(len(prompts), 1)
    started = time.monotonic()
    limit = started + config.time_limit_s

    def task(prompt: Prompt, scheduled: float) -> None:
        sent = time.monotonic() - started
        result = send(config, prompt)
        result.scheduled_s, result.started_s = scheduled, sent
        with lock:
            results.append(result)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench") as pool:
        futures = []
        for prompt, scheduled in zip(prompts, arrivals, strict=True):
            wait = started + scheduled - time.monotonic()
            if started + scheduled >= limit:
                stopped_by = "time_limit"
                break
            if wait > 0:
                time.sleep(wait)
            futures.append(pool.submit(task, prompt, scheduled))
        for future in futures:
            future.result()
    return LevelRun(level, results, time.monotonic() - started, stopped_by)


def client_tokens(results: Iterable[RequestResult]) -> ClientTokens:
    """What the successful responses said they used, summed."""
    prompt = cached = processed = output = drafted = accepted = 0
    for result in results:
        if not result.ok:
            continue
        prompt += result.prompt_tokens or 0
        cached += result.cached_tokens or 0
        drafted += result.draft_tokens or 0
        accepted += result.draft_accepted or 0
        if result.prompt_processed is not None:
            processed += result.prompt_processed
        else:
            processed += (result.prompt_tokens or 0) - (result.cached_tokens or 0)
        output += result.completion_tokens
    return ClientTokens(prompt, cached, processed, output, drafted, accepted)


def _rounded(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def speculative_summary(
    ok: Sequence[RequestResult], server_metrics: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Speculative decoding over a level's successful requests: None when no response said it
    drafted and the server's counters (when read) count no draft; else the tokens drafted
    and accepted, the acceptance rate, and the server's drafts and mean accepted length.

    The rate is the responses' (``timings.draft_n``, ``draft_n_accepted``, summed), else the
    server's counters' when no response said (a proxy that drops ``timings``): ``source``."""
    drafting = [r for r in ok if r.draft_tokens is not None]
    drafted = sum(r.draft_tokens or 0 for r in drafting)
    accepted = sum(r.draft_accepted or 0 for r in drafting)
    check = server_metrics if server_metrics and not server_metrics.get("error") else {}
    server_drafted = (check.get("draft_tokens") or {}).get("server")
    server_accepted = (check.get("accepted_draft_tokens") or {}).get("server")
    drafts = check.get("drafts")
    if not drafted and not server_drafted:
        return None
    source = "timings" if drafted else "metrics"
    if source == "metrics":
        drafted, accepted = server_drafted or 0, server_accepted or 0
    return {
        "source": source,
        "requests": len(drafting),
        "draft_tokens": drafted,
        "accepted_tokens": accepted,
        "acceptance_rate": acceptance_rate(drafted, accepted),
        "drafts": drafts,
        "mean_accepted_length": mean_accepted_length(server_accepted, drafts),
    }


def summarize_level(
    run: LevelRun, config: BenchConfig, server_metrics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One level's figures, as they go into ``levels[]`` of the document."""
    ok = [r for r in run.results if r.ok]
    failed = [r for r in run.results if not r.ok]
    wall = run.wall_s
    output_total = sum(r.completion_tokens for r in ok)
    prompt_total = sum(
        r.prompt_tokens if r.prompt_tokens is not None else (r.input_tokens or 0) for r in ok
    )
    reasons = Counter(r.error or "unknown error" for r in failed)
    sources = sorted({r.token_source for r in ok if r.token_source})
    prompt_known = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    tpots = [value for value in (r.tpot_s for r in ok) if value is not None]
    lags = [
        r.started_s - r.scheduled_s
        for r in run.results
        if r.started_s is not None and r.scheduled_s is not None
    ]
    server_rates = [r.server_tokens_per_s for r in ok if r.server_tokens_per_s is not None]
    return {
        "name": run.level.name,
        **run.level.settings(),
        "requests": len(run.results),
        "succeeded": len(ok),
        "failed": len(failed),
        "stopped_by": run.stopped_by,
        "wall_s": _rounded(wall),
        "model": next((r.model for r in ok if r.model), None),
        "input_tokens": {
            "per_request": config.input_tokens,
            "prompt_tokens_mean": _rounded(mean(prompt_known), 2),
            "cached_tokens": sum(r.cached_tokens or 0 for r in ok),
        },
        "output_tokens": {
            "per_request": config.output_tokens,
            "total": output_total,
            "short": sum(1 for r in ok if r.completion_tokens < config.output_tokens),
            "token_source": "+".join(sources) if sources else None,
            "content_chunks": sum(r.content_chunks for r in ok),
            "reasoning_chunks": sum(r.reasoning_chunks for r in ok),
        },
        "ttft_s": distribution(r.ttft_s for r in ok if r.ttft_s is not None),
        "tpot_s": distribution(tpots),
        "itl_s": distribution(gap for r in ok for gap in r.itl_s),
        "e2e_s": distribution(r.latency_s for r in ok if r.latency_s is not None),
        "throughput": {
            "requests_per_s": _rounded(len(ok) / wall, 4) if wall > 0 else None,
            "output_tokens_per_s": _rounded(output_total / wall, 2) if wall > 0 else None,
            "total_tokens_per_s": (
                _rounded((output_total + prompt_total) / wall, 2) if wall > 0 else None
            ),
            "server_output_tokens_per_s_mean": _rounded(mean(server_rates), 2),
        },
        "goodput": (
            goodput((r.figures() for r in run.results), config.objectives, wall)
            if config.objectives
            else None
        ),
        "arrival_lag_s": (
            {"n": len(lags), "mean": _rounded(mean(lags)), "max": _rounded(max(lags, default=None))}
            if run.level.rate is not None
            else None
        ),
        "speculative": speculative_summary(ok, server_metrics),
        "server_metrics": server_metrics,
        "errors": [
            {"reason": reason, "count": count} for reason, count in reasons.most_common(MAX_REASONS)
        ],
        "errors_left_out": max(len(reasons) - MAX_REASONS, 0),
    }


def run_level(
    config: BenchConfig,
    level: Level,
    *,
    first_prompt: int = 1,
    send: Send = send_request,
    tokenizer: Callable[[str], Sequence[str]] | None = None,
    metrics: Callable[[BenchConfig], dict[str, float]] = read_metrics,
) -> dict[str, Any]:
    """Run one level against `config.endpoint` and return its ``levels[]`` dictionary.

    Builds prompts `first_prompt` .. `first_prompt + config.requests - 1` (give each level
    of a run its own range: a prompt the server has seen may be in its cache), reads the
    server's counters, sends the requests, reads the counters again. Raises BenchError when
    the prompts cannot be built; a metrics failure is reported in ``server_metrics.error``.
    """
    prompts = build_prompts(config, first_prompt, config.requests, tokenizer)
    url = config.metrics
    before: dict[str, float] | None = None
    error: str | None = None
    if url is not None:
        try:
            before = metrics(config)
        except BenchError as exc:
            error = str(exc)
    run = drive_level(config, level, prompts, send)
    server_metrics: dict[str, Any] | None = None
    if url is not None:
        server_metrics = {"url": url, "error": error}
        if before is not None:
            try:
                after = metrics(config)
            except BenchError as exc:
                server_metrics["error"] = str(exc)
            else:
                server_metrics.update(cross_check(client_tokens(run.results), before, after))
    return summarize_level(run, config, server_metrics)


def run_benchmark(
    config: BenchConfig,
    send: Send = send_request,
    progress: Callable[[str], None] = lambda line: None,
    tokenizer: Callable[[str], Sequence[str]] | None = None,
    metrics: Callable[[BenchConfig], dict[str, float]] = read_metrics,
) -> dict[str, Any]:
    """Warm up once (not counted), then run every level; the ``llmfleet.bench/2`` document.

    Prompt 0 is the warm-up's; level k (from 0) gets prompts ``1 + k * requests`` onwards, so
    no prompt is sent twice in a run. Raises BenchError when the prompts cannot be built.
    """
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    warmup: RequestResult | None = None
    if config.warmup:
        progress(f"warm-up request ({config.input_tokens} prompt tokens)")
        [prompt] = build_prompts(config, 0, 1, tokenizer)
        warmup = send(config, prompt)
    model = warmup.model if warmup and warmup.ok else None
    levels = []
    for number, level in enumerate(config.levels):
        progress(f"{level.name}: {config.requests} requests")
        levels.append(
            run_level(
                config,
                level,
                first_prompt=1 + number * config.requests,
                send=send,
                tokenizer=tokenizer,
                metrics=metrics,
            )
        )
        model = model or levels[-1]["model"]
    return {
        "schema": SCHEMA,
        "tool": f"llmfleet {__version__}",
        "endpoint": config.endpoint,
        "url": config.url,
        "model": model,
        "started_at": started_at,
        "settings": config.settings(),
        "warmup": None if warmup is None else _warmup_dict(warmup),
        "levels": levels,
    }


def _warmup_dict(result: RequestResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "status": result.status,
        "e2e_s": _rounded(result.latency_s),
        "ttft_s": _rounded(result.ttft_s),
        "completion_tokens": result.completion_tokens,
        "error": result.error,
    }


def all_failed_levels(document: dict[str, Any]) -> list[str]:
    """The name of each level in which no request succeeded."""
    return [level["name"] for level in document["levels"] if level["succeeded"] == 0]


# -- output ----------------------------------------------------------------------------------------

SUMMARY_COLUMNS = (
    "level",
    "sent",
    "ok",
    "failed",
    "req/s",
    "out tok/s",
    "goodput req/s",
    "wall s",
)
LATENCY_COLUMNS = ("level", "metric", "n", "mean", *(f"p{p}" for p in PERCENTILES), "max")
CHECK_COLUMNS = ("level", "tokens", "client", "server", "difference", "check")
SPECULATIVE_COLUMNS = (
    "level",
    "requests",
    "drafted",
    "accepted",
    "acceptance",
    "drafts",
    "tokens/draft",
)
METRICS = (("ttft_s", "TTFT ms"), ("tpot_s", "TPOT ms"), ("itl_s", "ITL ms"), ("e2e_s", "E2E ms"))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percentile_cell(figures: dict[str, Any], p: int) -> str:
    value = figures[percentile_key(p)]
    if value is None and figures["n"]:
        return f"n too small for p{p}"
    return _ms(value)


def _check_rows(level: dict[str, Any]) -> list[tuple[str, ...]]:
    check = level["server_metrics"]
    if check is None or check.get("error"):
        return []
    rows = []
    for key, label in (
        ("prompt_tokens", "prompt"),
        ("output_tokens", "output"),
        ("draft_tokens", "drafted"),
        ("accepted_draft_tokens", "draft accepted"),
    ):
        comparison = check.get(key)
        if comparison is None:
            continue
        if key not in ("prompt_tokens", "output_tokens") and not (
            comparison["client"] or comparison["server"]
        ):
            continue  # no speculative decoding on either side: nothing to say
        difference = comparison["relative_difference"]
        rows.append(
            (
                level["name"],
                f"{label} ({comparison['basis']})" if key == "prompt_tokens" else label,
                str(comparison["client"]),
                str(comparison["server"]),
                "-" if difference is None else f"{difference * 100:+.2f}%",
                "FLAGGED" if comparison["flagged"] else "ok",
            )
        )
    return rows


def _level_notes(level: dict[str, Any]) -> list[str]:
    name = level["name"]
    notes = []
    if level["stopped_by"] == "time_limit":
        notes.append(f"{name}: stopped by the time limit after {level['requests']} requests")
    notes.extend(f"{name}: {e['count']} failed: {e['reason']}" for e in level["errors"])
    if level["errors_left_out"]:
        notes.append(f"{name}: {level['errors_left_out']} more failure reasons left out")
    output = level["output_tokens"]
    if output["short"]:
        notes.append(
            f"{name}: {output['short']} answers had fewer than {output['per_request']} tokens "
            "(the server ignored ignore_eos, or the context ran out)"
        )
    prompt_total = (level["input_tokens"]["prompt_tokens_mean"] or 0) * level["succeeded"]
    cached = level["input_tokens"]["cached_tokens"]
    if prompt_total and cached > CACHED_NOTE_SHARE * prompt_total:
        notes.append(
            f"{name}: {cached} of {round(prompt_total)} prompt tokens came from the server's "
            "cache: these prompts were sent before (use another --seed, or no --prompt-cache)"
        )
    speculative = level.get("speculative")
    if speculative and speculative["source"] == "metrics":
        notes.append(
            f"{name}: no response said what it drafted (timings left out on the way?): the "
            "acceptance is the server's counters'"
        )
    check = level["server_metrics"]
    if check is not None and check.get("error"):
        notes.append(f"{name}: server metrics not read: {check['error']}")
    elif check is not None:
        notes.extend(f"{name}: server metrics: {problem}" for problem in check["problems"])
        if check["flagged"]:
            notes.append(
                f"{name}: the client's and the server's token counts differ by more than "
                f"{check['tolerance'] * 100:g}% (other traffic on the server? requests retried "
                "by a proxy? the metrics of another engine?)"
                + (
                    f"; failed requests ({level['failed']}) are not in the client's count"
                    if level["failed"]
                    else ""
                )
            )
    return notes


def format_report(document: dict[str, Any]) -> str:
    """The plain-text report: the workload, a row per level, the latency distributions, the
    server-metrics check, then the notes (failures, flags)."""
    settings = document["settings"]
    rule = ", ".join(
        f"{key} needs n >= {n}" for key, n in settings["percentiles"]["min_samples"].items()
    )
    objectives = ", ".join(
        f"{metric} <= {limit * 1000:g} ms" for metric, limit in settings["objectives"].items()
    )
    lines = [
        f"endpoint    {document['url']}",
        f"model       {document['model'] or '-'}",
        f"workload    {settings['requests_per_level']} requests per level; prompts of "
        f"{settings['input_tokens']} tokens, distinct (seed {settings['seed']}); answers of "
        f"{settings['output_tokens']} tokens (ignore_eos); temperature 0",
        f"limits      timeout {settings['timeout_s']:g} s per request, "
        f"{settings['time_limit_s']:g} s per level",
        f"objectives  {objectives or '- (no goodput without --slo)'}",
        f"percentiles linear interpolation (numpy's default); {rule}",
        "",
    ]
    summary = [
        (
            level["name"],
            str(level["requests"]),
            str(level["succeeded"]),
            str(level["failed"]),
            _num(level["throughput"]["requests_per_s"], 2),
            _num(level["throughput"]["output_tokens_per_s"]),
            _num(level["goodput"]["requests_per_s"], 2) if level["goodput"] else "-",
            _num(level["wall_s"]),
        )
        for level in document["levels"]
    ]
    lines.append(format_table(summary, SUMMARY_COLUMNS))
    latency = []
    for level in document["levels"]:
        for key, label in METRICS:
            figures = level[key]
            latency.append(
                (
                    level["name"],
                    label,
                    str(figures["n"]),
                    _ms(figures["mean"]),
                    *(_percentile_cell(figures, p) for p in PERCENTILES),
                    _ms(figures["max"]),
                )
            )
    lines.extend(["", format_table(latency, LATENCY_COLUMNS)])
    speculative = [
        (
            level["name"],
            str(spec["requests"]),
            str(spec["draft_tokens"]),
            str(spec["accepted_tokens"]),
            "-" if spec["acceptance_rate"] is None else f"{spec['acceptance_rate'] * 100:.1f}%",
            "-" if spec["drafts"] is None else str(spec["drafts"]),
            _num(spec["mean_accepted_length"], 2),
        )
        for level in document["levels"]
        for spec in [level.get("speculative")]
        if spec
    ]
    if speculative:
        lines.extend(["", "speculative decoding (draft model): tokens drafted and accepted"])
        lines.append(format_table(speculative, SPECULATIVE_COLUMNS))
    checks = [row for level in document["levels"] for row in _check_rows(level)]
    if checks:
        lines.extend(["", f"server metrics: {settings['metrics_url']}"])
        lines.append(format_table(checks, CHECK_COLUMNS))
    notes = [note for level in document["levels"] for note in _level_notes(level)]
    warmup = document["warmup"]
    if warmup is not None and not warmup["ok"]:
        notes.insert(0, f"warm-up: failed: {warmup['error']}")
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


def parse_rates(text: str) -> tuple[float, ...]:
    """'0.5,2' -> (0.5, 2.0): requests per second, each more than 0."""
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"rates must be numbers separated by commas, not {text!r}") from None
    if not rates or any(not rate > 0 or rate == float("inf") for rate in rates):
        raise ValueError(f"request rates must be more than 0 per second, not {text!r}")
    return rates
