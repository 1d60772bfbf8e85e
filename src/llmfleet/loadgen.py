"""`llmfleet load`: steady, bounded traffic across the fleet, as a balancer sends it.

What an operator runs beside an upgrade to see that no request is dropped:
each endpoint gets its own workers; before every request a worker asks the
endpoint's ``/health`` (a balancer's probe) and sends nothing to an endpoint
that does not answer 200 (an in-place upgrade drains a host that way); every
request is a real chat completion, and
any answer other than a complete completion counts as a failure. Requests are
not streamed: the whole answer is read by its Content-Length, so a failure is
the server's or the network's, never a stream parser's.

Bounds: no request starts after ``duration_s`` or once ``max_requests`` were
sent or the stop file exists; each request ends by ``timeout_s``. So a run
always stops by itself.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmfleet.bench import RequestResult, chat_url

#: How many failures the report lists one by one.
MAX_LISTED_FAILURES = 20
#: Seconds a worker waits after its endpoint's /health said no.
UNHEALTHY_PAUSE_S = 0.5


@dataclass(frozen=True)
class LoadConfig:
    """Everything a run needs. The API key is used in the header only and never reported."""

    endpoints: tuple[str, ...]
    concurrency: int = 1
    max_requests: int = 1000
    duration_s: float = 600.0
    max_tokens: int = 8
    timeout_s: float = 60.0
    health_timeout_s: float = 2.0
    stop_file: Path | None = None
    prompt: str = "Say hello in one short sentence."
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Outcome:
    """One request: when it started (seconds into the run), where, and how it ended."""

    endpoint: str
    started_s: float
    ok: bool
    status: int | None
    latency_s: float | None
    error: str | None


def health_url(endpoint: str) -> str:
    """``http://host:port/health`` of an endpoint given as ``http://host:port[/...]``."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"an endpoint must be an http(s) URL, got {endpoint!r}")
    return f"{parts.scheme}://{parts.netloc}/health"


def is_healthy(endpoint: str, timeout_s: float) -> bool:
    """Whether the endpoint's /health answers 200 (a balancer's probe)."""
    url = urlsplit(health_url(endpoint))
    connection_class = (
        http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(url.hostname or "", url.port, timeout=timeout_s)
    try:
        connection.request("GET", url.path)
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def send_completion(endpoint: str, config: LoadConfig) -> RequestResult:
    """One chat completion, read whole; never raises for a failed request."""
    url = urlsplit(chat_url(endpoint))
    connection_class = (
        http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(url.hostname or "", url.port, timeout=config.timeout_s)
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": config.prompt}],
            "max_tokens": config.max_tokens,
            "temperature": 0,
            "stream": False,
        }
    ).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "llmfleet-load"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    started = time.monotonic()
    status: int | None = None
    try:
        connection.request("POST", url.path, body=body, headers=headers)
        response = connection.getresponse()
        status = response.status
        data = response.read()
        if status != 200:
            text = data[:200].decode("utf-8", "replace")
            if config.api_key:
                text = text.replace(config.api_key, "***")
            return RequestResult(ok=False, status=status, error=f"HTTP {status}: {text}")
        answer = json.loads(data)
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or not choices:
            return RequestResult(ok=False, status=status, error="the answer has no choices")
        usage = answer.get("usage") or {}
        return RequestResult(
            ok=True,
            status=status,
            latency_s=time.monotonic() - started,
            completion_tokens=int(usage.get("completion_tokens") or 0),
            token_source="usage",
            model=answer.get("model"),
        )
    except TimeoutError:
        return RequestResult(
            ok=False, status=status, error=f"timed out after {config.timeout_s:g} s"
        )
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return RequestResult(ok=False, status=status, error=reason)
    finally:
        connection.close()


def summarize(
    outcomes: Sequence[Outcome],
    health_skips: Counter[str],
    endpoints: Sequence[str],
    elapsed: float,
) -> dict[str, Any]:
    """The run's report: totals, per endpoint, and the first failures with their reasons."""
    per_endpoint = {}
    for endpoint in endpoints:
        mine = [o for o in outcomes if o.endpoint == endpoint]
        per_endpoint[endpoint] = {
            "sent": len(mine),
            "succeeded": sum(o.ok for o in mine),
            "failed": sum(not o.ok for o in mine),
            "health_skips": health_skips.get(endpoint, 0),
        }
    failures = [o for o in sorted(outcomes, key=lambda o: o.started_s) if not o.ok]
    return {
        "sent": len(outcomes),
        "succeeded": sum(o.ok for o in outcomes),
        "failed": len(failures),
        "health_skips": sum(health_skips.values()),
        "duration_s": round(elapsed, 3),
        "endpoints": per_endpoint,
        "failures": [
            {
                "endpoint": o.endpoint,
                "at_s": round(o.started_s, 3),
                "status": o.status,
                "error": o.error,
            }
            for o in failures[:MAX_LISTED_FAILURES]
        ],
    }


def run_load(
    config: LoadConfig,
    send: Callable[[str, LoadConfig], RequestResult] = send_completion,
    healthy: Callable[[str, float], bool] = is_healthy,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Send the load until a bound is reached; return ``summarize``'s report."""
    if not config.endpoints:
        raise ValueError("give at least one endpoint")
    if config.concurrency < 1 or config.max_requests < 1:
        raise ValueError("the concurrency and the request budget must be 1 or more")
    for endpoint in config.endpoints:
        health_url(endpoint)
    start = clock()
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    health_skips: Counter[str] = Counter()
    budget = [config.max_requests]

    def stopped() -> bool:
        if clock() - start >= config.duration_s:
            return True
        return config.stop_file is not None and config.stop_file.exists()

    def take_one() -> bool:
        with lock:
            if budget[0] <= 0:
                return False
            budget[0] -= 1
            return True

    def worker(endpoint: str) -> None:
        while not stopped():
            if not healthy(endpoint, config.health_timeout_s):
                with lock:
                    health_skips[endpoint] += 1
                time.sleep(UNHEALTHY_PAUSE_S)
                continue
            if not take_one():
                return
            started = clock() - start
            result = send(endpoint, config)
            with lock:
                outcomes.append(
                    Outcome(
                        endpoint, started, result.ok, result.status, result.latency_s, result.error
                    )
                )

    threads = [
        threading.Thread(target=worker, args=(endpoint,), daemon=True)
        for endpoint in config.endpoints
        for _ in range(config.concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarize(outcomes, health_skips, config.endpoints, clock() - start)


def format_summary(report: dict[str, Any]) -> str:
    """One line per endpoint and a total."""
    lines = [
        f"{endpoint}: {row['sent']} sent, {row['failed']} failed, "
        f"{row['health_skips']} health skips"
        for endpoint, row in report["endpoints"].items()
    ]
    lines.append(
        f"total: {report['sent']} sent, {report['succeeded']} succeeded, {report['failed']} failed "
        f"in {report['duration_s']:.1f} s"
    )
    lines.extend(
        f"failed at {f['at_s']:.1f} s on {f['endpoint']}: {f['status']} {f['error']}"
        for f in report["failures"]
    )
    return "\n".join(lines)
