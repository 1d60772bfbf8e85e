"""The engine's tuning: a bounded grid of llama-server settings for a host, the key a
result is kept under, and the choice by a stated objective.

The objective: the most output tokens per second at the host's target concurrency, among
the candidates whose time to first token and time per output token (p50, from
`llmfleet bench`) are within the latency objectives; when none is, the one with the most
tokens per second, said plainly. Pure functions; tests in tests/unit/test_tuning_filters.py.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any

#: The settings a candidate may set, with what llmfleet_serving_config calls them.
KNOBS = (
    "threads",
    "threads_batch",
    "parallel_slots",
    "batch_size",
    "ubatch_size",
    "flash_attention",
    "precision",
    "kv_unified",
    "speculative",  # the catalog's draft model on (true) or off: only where the model has one
)


class TuningError(ValueError):
    """A grid, an objective or a result the tuner cannot work with; says which."""


def _positive(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0:
        raise TuningError(f"{name} must be a positive whole number, got {value!r}")
    return number


def default_grid(
    physical_cores: Any,
    logical_cpus: Any,
    concurrency: Any,
    on_gpu: bool = False,
) -> dict[str, list[Any]]:
    """A bounded grid for a host class: decode threads on the physical cores or on every
    CPU; as many slots as the target concurrency or twice it; prompt batch 512 or 2048;
    the KV cache in f16 or q8_0; flash attention on for a GPU (auto elsewhere)."""
    cores = _positive(physical_cores, "the physical cores")
    cpus = max(_positive(logical_cpus, "the CPUs"), cores)
    target = _positive(concurrency, "the target concurrency")
    return {
        "threads": sorted({cores, cpus}),
        "threads_batch": [cpus],
        "parallel_slots": sorted({target, 2 * target}),
        "batch_size": [2048],
        "ubatch_size": [512],
        "flash_attention": ["on"] if on_gpu else ["auto"],
        "precision": ["f16", "q8_0"],
        "kv_unified": [True],
    }


def candidates(
    grid: Mapping[str, Iterable[Any]], limit: Any = 8, has_draft: bool | None = None
) -> list[dict[str, Any]]:
    """Every combination of the grid, in a stable order, at most `limit` of them (the grid
    is bounded: a larger one is refused, naming its size, instead of being cut silently).

    ``speculative`` (draft model on or off) is a dimension only for a model with a draft
    model: with ``has_draft`` false, a grid that turns it on is refused (its candidates
    would measure the same server twice)."""
    unknown = sorted(set(grid) - set(KNOBS))
    if unknown:
        raise TuningError(f"unknown tuning knobs {', '.join(unknown)}; known: {', '.join(KNOBS)}")
    if has_draft is False and any(
        value is True or str(value).lower() in ("true", "yes", "on")
        for value in grid.get("speculative") or ()
    ):
        raise TuningError(
            "the tuning grid tries speculative decoding, but the model has no draft model "
            "(model_store_models[].draft): leave speculative out of engine_tuning_grid"
        )
    names = [name for name in KNOBS if name in grid]
    values = []
    for name in names:
        choices = list(grid[name])
        if not choices:
            raise TuningError(f"the tuning grid gives {name} no value")
        values.append(choices)
    combos = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
    bound = _positive(limit, "the candidate limit")
    if len(combos) > bound:
        raise TuningError(
            f"the tuning grid has {len(combos)} candidates, more than the limit of {bound}: "
            "narrow it (engine_tuning_grid) or raise engine_tuning_max_candidates"
        )
    return combos


def tuning_key(*parts: Any) -> str:
    """The sha256 a result is kept under: the hardware, the engine build, the model's sha256,
    the grid, the objective and the benchmark's shape, in canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _figure(level: Mapping[str, Any], *path: str) -> float | None:
    node: Any = level
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def score(level: Mapping[str, Any], objectives: Mapping[str, Any]) -> dict[str, Any]:
    """One candidate's figures and whether it meets the objectives (p50 TTFT and TPOT, in
    milliseconds; no failed request)."""
    tokens = _figure(level, "throughput", "output_tokens_per_s")
    ttft = _figure(level, "ttft_s", "p50")
    tpot = _figure(level, "tpot_s", "p50")
    failed = int(level.get("failed") or 0)
    misses = []
    if failed:
        misses.append(f"{failed} failed requests")
    if tokens is None:
        misses.append("no tokens per second")
    ttft_ms = None if ttft is None else round(ttft * 1000, 1)
    tpot_ms = None if tpot is None else round(tpot * 1000, 2)
    ttft_objective = objectives.get("ttft_p50_ms")
    tpot_objective = objectives.get("tpot_p50_ms")
    if ttft_objective is not None and (ttft_ms is None or ttft_ms > float(ttft_objective)):
        misses.append(f"TTFT p50 {ttft_ms} ms > {ttft_objective} ms")
    if tpot_objective is not None and (tpot_ms is None or tpot_ms > float(tpot_objective)):
        misses.append(f"TPOT p50 {tpot_ms} ms > {tpot_objective} ms")
    return {
        "output_tokens_per_s": tokens,
        "ttft_p50_ms": ttft_ms,
        "tpot_p50_ms": tpot_ms,
        "failed": failed,
        "meets": not misses,
        "misses": misses,
    }


def choose(results: Iterable[Mapping[str, Any]], objectives: Mapping[str, Any]) -> dict[str, Any]:
    """The best of ``[{settings, level}]`` by the objective, with every candidate's figures.

    Returns ``{settings, figures, met_objectives, reason, table}``.
    """
    table = []
    for result in results:
        if not isinstance(result, Mapping) or "settings" not in result:
            raise TuningError(f"a tuning result needs settings and a level, got {result!r}")
        figures = score(result.get("level") or {}, objectives)
        table.append({"settings": dict(result["settings"]), **figures})
    if not table:
        raise TuningError("no candidate was measured")
    measured = [row for row in table if row["output_tokens_per_s"] is not None]
    if not measured:
        raise TuningError("no candidate produced tokens: see each candidate's misses")
    meeting = [row for row in measured if row["meets"]]
    pool = meeting or measured

    def rank(row: Mapping[str, Any]) -> tuple[float, float]:
        # The most tokens per second; on a tie, the sooner first token.
        return (row["output_tokens_per_s"], -(row["ttft_p50_ms"] or float("inf")))

    best = max(pool, key=rank)
    why = (
        f"the most output tokens/s ({best['output_tokens_per_s']:g}) of the "
        f"{len(meeting)} candidates within the objectives"
        if meeting
        else f"no candidate met the objectives; the most output tokens/s "
        f"({best['output_tokens_per_s']:g}) of {len(measured)} measured"
    )
    return {
        "settings": best["settings"],
        "figures": {k: best[k] for k in ("output_tokens_per_s", "ttft_p50_ms", "tpot_p50_ms")},
        "met_objectives": bool(meeting),
        "reason": why,
        "table": table,
    }


class FilterModule:
    """llmfleet tuning filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "llmfleet_tuning_grid": default_grid,
            "llmfleet_tuning_candidates": candidates,
            "llmfleet_tuning_key": tuning_key,
            "llmfleet_tuning_choose": choose,
        }
