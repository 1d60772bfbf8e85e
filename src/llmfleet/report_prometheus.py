"""What `llmfleet report --prometheus URL` reads from Prometheus' HTTP API (read-only).

Four instant queries, each answered as a vector (``GET /api/v1/query``):

``alerts``   ``ALERTS{alertstate="firing"}``: the alerts firing, labelled by instance
``fb_used``  ``DCGM_FI_DEV_FB_USED``: VRAM used (MiB) per instance and gpu
``fb_free``  ``DCGM_FI_DEV_FB_FREE``: VRAM free (MiB) per instance and gpu
``up``       ``up{job="llmfleet-engine"}``: whether each host's engine answered its last scrape

Prometheus asks for basic auth (the metrics user; `--prometheus-user`,
`--prometheus-password-file`). `fetch` never raises for what the server does: a server that
cannot be reached, or that refuses the credentials, gives ``error`` (the report says so and
goes on without live figures); a query that fails alone gives ``errors[query]``.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

QUERIES = {
    "alerts": 'ALERTS{alertstate="firing"}',
    "fb_used": "DCGM_FI_DEV_FB_USED",
    "fb_free": "DCGM_FI_DEV_FB_FREE",
    "up": 'up{job="llmfleet-engine"}',
}
DEFAULT_TIMEOUT_S = 5.0
#: The most one answer may hold (a fleet of thousands of GPUs is far below it).
MAX_BODY = 32 * 1024 * 1024

#: (url, headers, timeout) -> (status, body); raises OSError when nothing answers.
Get = Callable[[str, dict[str, str], float], tuple[int, bytes]]


def check_url(url: str) -> str:
    """The base URL without a trailing slash; ValueError for one that is not http(s)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--prometheus {url!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"--prometheus {url!r}: give the base URL, without ? or #")
    return url.rstrip("/")


def query_url(base: str, query: str) -> str:
    return f"{base}/api/v1/query?{urllib.parse.urlencode({'query': query})}"


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def urllib_get(url: str, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """GET with urllib: an HTTP error status is returned, not raised."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
    try:
        with urllib.request.urlopen(
            request, timeout=timeout
        ) as response:  # http(s) only: check_url
            return response.status, response.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(MAX_BODY + 1)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def parse_answer(status: int, body: bytes) -> tuple[list[Any] | None, str | None]:
    """The vector of one answer, or None and why not."""
    if len(body) > MAX_BODY:
        return None, f"the answer is over {MAX_BODY // (1024 * 1024)} MiB"
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, f"HTTP {status}, not JSON: {body[:120]!r}"
    if not isinstance(document, dict):
        return None, f"HTTP {status}, not a Prometheus answer"
    if status != 200 or document.get("status") != "success":
        error = document.get("error") or document.get("errorType") or "no reason given"
        return None, f"HTTP {status}: {error}"
    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        return None, "the answer is not an instant vector"
    result = data.get("result")
    return (result, None) if isinstance(result, list) else (None, "the vector has no result")


def fetch(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    get: Get = urllib_get,
) -> dict[str, Any]:
    """``{"url", "error", "errors", "series"}`` (see the module's docstring)."""
    base = check_url(url)
    headers = basic_auth(user, password or "") if user else {}
    snapshot: dict[str, Any] = {"url": base, "error": None, "errors": {}, "series": {}}
    for name, query in QUERIES.items():
        try:
            status, body = get(query_url(base, query), headers, timeout)
        except (OSError, ValueError) as exc:  # refused, timed out, no such host, TLS
            snapshot["error"] = f"cannot reach Prometheus at {base}: {_reason(exc)}"
            snapshot["series"] = {}
            return snapshot
        if status in (401, 403):
            hint = (
                "the user or password is wrong"
                if user
                else "give --prometheus-user and --prometheus-password-file"
            )
            snapshot["error"] = f"Prometheus at {base} answered HTTP {status}: {hint}"
            snapshot["series"] = {}
            return snapshot
        result, error = parse_answer(status, body)
        if error is not None:
            snapshot["errors"][name] = f"{query}: {error}"
        else:
            snapshot["series"][name] = result
    return snapshot
