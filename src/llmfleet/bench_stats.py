"""The statistics of `llmfleet bench`: pure functions, no I/O, no clock.

Definitions (those of vLLM's ``benchmark_serving``; times in seconds, measured by the client
from the moment it starts sending a request):

TTFT
    time to the first streamed chunk that carries generated text, answer (``content``) or
    thinking (``reasoning_content``) alike.
E2E
    end-to-end latency: time to the end of the stream (``data: [DONE]``).
TPOT
    time per output token after the first, one value per request:
    ``(e2e - ttft) / (output_tokens - 1)``; undefined (left out) when a request produced
    fewer than 2 tokens.
ITL
    inter-token latency: every gap between two consecutive chunks that carry generated text,
    pooled over the requests of a level (a request with ``k`` such chunks gives ``k - 1``).

Percentiles use linear interpolation between the closest ranks (numpy's default ``"linear"``,
Excel's ``PERCENTILE.INC``, ``statistics.quantiles(method="inclusive")``): for sorted values
``x[0..n-1]`` the rank of ``p`` is ``r = p / 100 * (n - 1)`` and the percentile is
``x[floor(r)] + (r - floor(r)) * (x[floor(r) + 1] - x[floor(r)])``.

Enough samples: the p-th percentile is reported only from ``n >= ceil(100 / (100 - p))``
samples, that is when on average at least one sample lies above it: p50 needs 2, p90 needs
10, p99 needs 100. Below that the value is ``None`` ("n too small for p99"), not the largest
sample dressed up as a percentile.

Goodput (vLLM's): the rate of requests, per second of the level's wall time, that succeeded
and met every latency objective the user stated (``ttft``, ``tpot``, ``e2e``); a request
whose TPOT is undefined is not held to a TPOT objective.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The percentiles every distribution reports.
PERCENTILES = (50, 90, 99)
PERCENTILE_METHOD = (
    "linear interpolation between closest ranks (numpy 'linear', PERCENTILE.INC, "
    "statistics.quantiles(method='inclusive'))"
)
SAMPLE_RULE = "the p-th percentile needs n >= ceil(100 / (100 - p)) samples"
#: Objectives a user may state, and the distribution each one limits.
OBJECTIVE_METRICS = ("ttft", "tpot", "e2e")
#: The relative difference above which the client's and the server's token counts disagree.
CROSS_CHECK_TOLERANCE = 0.01
#: Seconds are reported to the microsecond.
DIGITS = 6


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


def min_samples(p: float) -> int:
    """How many samples the p-th percentile needs (p50: 2, p90: 10, p99: 100)."""
    if not 0 <= p < 100:
        raise ValueError(f"a reported percentile must be within 0 and 100 (excluded), not {p}")
    return math.ceil(round(100 / (100 - p), 9))


def mean(values: Iterable[float]) -> float | None:
    """The arithmetic mean; None if empty."""
    values = list(values)
    return statistics.fmean(values) if values else None


def _rounded(value: float | None, digits: int = DIGITS) -> float | None:
    return None if value is None else round(value, digits)


def distribution(
    values: Iterable[float], percentiles: Sequence[float] = PERCENTILES
) -> dict[str, Any]:
    """``{"n", "mean", "min", "max", "p50", "p90", "p99"}``; a percentile is None when n is
    below its `min_samples`, every figure None when there is no sample."""
    ordered = sorted(values)
    n = len(ordered)
    figures: dict[str, Any] = {
        "n": n,
        "mean": _rounded(mean(ordered)),
        "min": _rounded(ordered[0]) if ordered else None,
        "max": _rounded(ordered[-1]) if ordered else None,
    }
    for p in percentiles:
        value = percentile(ordered, p) if n >= min_samples(p) else None
        figures[percentile_key(p)] = _rounded(value)
    return figures


def percentile_key(p: float) -> str:
    """'p99' for 99, 'p99.9' for 99.9."""
    return f"p{p:g}"


def tpot(e2e_s: float, ttft_s: float, output_tokens: int) -> float | None:
    """Time per output token after the first; None with fewer than 2 output tokens."""
    if output_tokens < 2:
        return None
    return (e2e_s - ttft_s) / (output_tokens - 1)


def inter_token_latencies(token_times: Sequence[float]) -> list[float]:
    """The gaps between consecutive token chunks' arrival times."""
    return [later - earlier for earlier, later in itertools.pairwise(token_times)]


def poisson_arrivals(rate: float, count: int, seed: int | str) -> list[float]:
    """Send times (seconds from the level's start) of `count` requests arriving as a Poisson
    process of `rate` per second: the first at 0, then exponential gaps of mean 1 / rate,
    drawn from ``random.Random(seed)`` (the same seed, the same times)."""
    if rate <= 0:
        raise ValueError(f"the request rate must be more than 0, not {rate}")
    rng = random.Random(seed)
    times: list[float] = []
    now = 0.0
    for index in range(count):
        if index:
            now += rng.expovariate(rate)
        times.append(now)
    return times


# -- objectives and goodput --------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """A latency objective: `metric` (ttft, tpot, e2e) at most `limit_s` seconds."""

    metric: str
    limit_s: float

    def text(self) -> str:
        return f"{self.metric} <= {self.limit_s * 1000:g} ms"


_OBJECTIVE = re.compile(r"^\s*([a-z0-9]+)\s*=\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*$", re.IGNORECASE)
_ALIASES = {"e2el": "e2e", "latency": "e2e"}


def parse_objective(text: str) -> Objective:
    """'ttft=500ms' -> Objective('ttft', 0.5). Units ms or s; a bare number is milliseconds
    (as vLLM's --goodput). ValueError with the accepted forms otherwise."""
    match = _OBJECTIVE.match(text)
    metric = _ALIASES.get(match.group(1).lower(), match.group(1).lower()) if match else None
    if not match or metric not in OBJECTIVE_METRICS:
        raise ValueError(
            f"an objective is NAME=VALUE[ms|s] with NAME one of {', '.join(OBJECTIVE_METRICS)} "
            f"(e.g. ttft=500ms, tpot=50ms, e2e=10s), not {text!r}"
        )
    value = float(match.group(2))
    limit = value if (match.group(3) or "ms").lower() == "s" else value / 1000
    if limit <= 0:
        raise ValueError(f"an objective's limit must be more than 0, not {text!r}")
    return Objective(metric, limit)


def parse_objectives(texts: Iterable[str]) -> tuple[Objective, ...]:
    """Objectives in the order given; a metric named twice is an error."""
    objectives = tuple(parse_objective(text) for text in texts)
    names = [objective.metric for objective in objectives]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"an objective is stated twice for {', '.join(twice)}")
    return objectives


def meets(figures: Mapping[str, float | None], objectives: Iterable[Objective]) -> bool:
    """Whether one request's figures (``{"ttft": s, "tpot": s or None, "e2e": s}``) meet every
    objective; a None figure (TPOT of a 1-token answer) is not held to its objective."""
    for objective in objectives:
        value = figures.get(objective.metric)
        if value is not None and value > objective.limit_s:
            return False
    return True


def goodput(
    requests: Iterable[Mapping[str, float | None] | None],
    objectives: Sequence[Objective],
    wall_s: float,
) -> dict[str, Any]:
    """Goodput of a level. `requests` holds each sent request's figures, None for a failed one.

    ``{"objectives", "good", "sent", "fraction", "requests_per_s"}``: ``good`` requests
    succeeded and met every objective; ``requests_per_s`` is good / wall time.
    """
    sent = 0
    good = 0
    for figures in requests:
        sent += 1
        if figures is not None and meets(figures, objectives):
            good += 1
    return {
        "objectives": {objective.metric: objective.limit_s for objective in objectives},
        "good": good,
        "sent": sent,
        "fraction": _rounded(good / sent, 4) if sent else None,
        "requests_per_s": _rounded(good / wall_s, 4) if wall_s > 0 else None,
    }


# -- the server's counters ---------------------------------------------------------------------

PROMPT_COUNTER = "llamacpp:prompt_tokens_total"
CACHED_COUNTER = "llamacpp:prompt_tokens_cached_total"
OUTPUT_COUNTER = "llamacpp:tokens_predicted_total"
#: Speculative decoding (llama-server exports them from the version the bundle builds; they
#: stay 0 on a server without a draft model): tokens drafted, drafted tokens the model
#: accepted, and drafts checked (one batch of the model each).
DRAFT_COUNTER = "llamacpp:spec_decode_num_draft_tokens_total"
ACCEPTED_COUNTER = "llamacpp:spec_decode_num_accepted_tokens_total"
DRAFTS_COUNTER = "llamacpp:spec_decode_num_drafts_total"

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition, summed per metric name (labels dropped)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if not match:
            continue  # a comment, a blank line
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        samples[match.group(1)] = samples.get(match.group(1), 0.0) + value
    return samples


def relative_difference(client: float, server: float) -> float | None:
    """``(client - server) / server``; 0 when both are 0, None when only the server's is 0."""
    if server == 0:
        return 0.0 if client == 0 else None
    return (client - server) / server


def _comparison(client: float, server: float, tolerance: float) -> dict[str, Any]:
    difference = relative_difference(client, server)
    return {
        "client": int(client),
        "server": int(server),
        "relative_difference": _rounded(difference, 6),
        "flagged": difference is None or abs(difference) > tolerance,
    }


@dataclass(frozen=True)
class ClientTokens:
    """What a level's responses said they used, summed over its requests."""

    prompt: int  # usage.prompt_tokens: the whole templated prompt
    prompt_cached: int  # usage.prompt_tokens_details.cached_tokens
    prompt_processed: int  # timings.prompt_n, else prompt - cached
    output: int  # usage.completion_tokens (else timings.predicted_n, else chunks)
    draft: int = 0  # timings.draft_n: tokens the draft model proposed
    draft_accepted: int = 0  # timings.draft_n_accepted: of those, the ones the model kept


def acceptance_rate(drafted: float | None, accepted: float | None) -> float | None:
    """Accepted draft tokens over drafted ones (0..1); None when nothing was drafted."""
    if not drafted or accepted is None:
        return None
    return _rounded(accepted / drafted, 4)


def mean_accepted_length(accepted: float | None, drafts: float | None) -> float | None:
    """Tokens each check of a draft gave, the model's own token included: ``1 + accepted /
    drafts`` (llama-server's "mean len"); None without a draft checked."""
    if not drafts or accepted is None:
        return None
    return _rounded(1 + accepted / drafts, 4)


def cross_check(
    client: ClientTokens,
    before: Mapping[str, float],
    after: Mapping[str, float],
    tolerance: float = CROSS_CHECK_TOLERANCE,
) -> dict[str, Any]:
    """The client's token counts against the server's counters read before and after a level.

    Prompt tokens: when the server exports ``llamacpp:prompt_tokens_cached_total``, its
    processed and cached counters together against the responses' ``prompt_tokens``
    (basis ``all``); otherwise the processed counter alone against the prompt tokens the
    responses say were processed (basis ``processed``). Output tokens: the
    ``llamacpp:tokens_predicted_total`` counter against the responses' completion tokens.
    A comparison is flagged when the relative difference is over `tolerance`. A counter that
    is missing, or went down (the server restarted), leaves that comparison out with a reason.

    Speculative decoding, where the server exports its counters: the drafted and the accepted
    draft tokens against the responses' ``timings.draft_n`` and ``draft_n_accepted``
    (``draft_tokens``, ``accepted_draft_tokens``), and ``drafts``, the drafts the model
    checked (the server alone counts them). A server without those counters (an older
    llama-server, another engine) leaves them null, with no problem: it has no drafts to count.
    """
    result: dict[str, Any] = {"tolerance": tolerance, "prompt_tokens": None, "output_tokens": None}
    problems: list[str] = []

    def delta(name: str) -> float | None:
        if name not in before or name not in after:
            return None
        return after[name] - before[name]

    prompt, cached, output = delta(PROMPT_COUNTER), delta(CACHED_COUNTER), delta(OUTPUT_COUNTER)
    for name, value in ((PROMPT_COUNTER, prompt), (OUTPUT_COUNTER, output)):
        if value is None:
            problems.append(f"the server does not export {name}")
        elif value < 0:
            problems.append(f"{name} went down: the server restarted during the level")
    if prompt is not None and prompt >= 0:
        if cached is not None and cached >= 0:
            comparison = _comparison(client.prompt, prompt + cached, tolerance)
            comparison["basis"] = "all"
        else:
            comparison = _comparison(client.prompt_processed, prompt, tolerance)
            comparison["basis"] = "processed"
        result["prompt_tokens"] = comparison
    if output is not None and output >= 0:
        result["output_tokens"] = _comparison(client.output, output, tolerance)
    drafted, accepted, drafts = delta(DRAFT_COUNTER), delta(ACCEPTED_COUNTER), delta(DRAFTS_COUNTER)
    for key, name, client_count, value in (
        ("draft_tokens", DRAFT_COUNTER, client.draft, drafted),
        ("accepted_draft_tokens", ACCEPTED_COUNTER, client.draft_accepted, accepted),
    ):
        result[key] = None
        if value is not None and value < 0:
            problems.append(f"{name} went down: the server restarted during the level")
        elif value is not None:
            result[key] = _comparison(client_count, value, tolerance)
    result["drafts"] = int(drafts) if drafts is not None and drafts >= 0 else None
    result["problems"] = problems
    result["flagged"] = bool(problems) or any(
        result[key] is not None and result[key]["flagged"]
        for key in ("prompt_tokens", "output_tokens", "draft_tokens", "accepted_draft_tokens")
    )
    return result
