"""Two `llmfleet bench` results side by side: the speedup of one server over another.

``llmfleet bench-compare BASELINE.json CANDIDATE.json`` (or ``llmfleet bench ENDPOINT
--baseline BASELINE.json``, which compares the run it just made) matches the levels by name
(``concurrency 4``, ``rate 2/s``) and gives, per level, each side's aggregate output tokens per
second and TPOT and their ratios, candidate over baseline: a tokens/s ratio above 1 and a TPOT
ratio below 1 are the candidate being faster. With speculative decoding on one side (a draft
model), the acceptance rate of each side comes along: the draft model's worth is the
acceptance and the speedup together, measured the same way on the same workload.

TPOT is the p50 of each side (what the tuner judges by), or the mean for both where a side has
too few samples for a p50; ``tpot_basis`` says which. The workloads must match to compare:
settings that differ (prompt and answer lengths, requests, seed, prompt cache) are listed,
and the text says so first.

The document (``--json``; schema ``llmfleet.bench-compare/1``, the JSON Schema is
``llmfleet/schemas/bench-compare-1.schema.json``)::

    schema          "llmfleet.bench-compare/1"
    baseline        {file, endpoint, model, started_at, tool}; candidate: the same
    workload_differences [text]
    levels[]        name, tpot_basis ("p50" | "mean"),
                    baseline, candidate: {succeeded, failed, output_tokens_per_s, tpot_s,
                                          ttft_p50_s, acceptance_rate},
                    output_tokens_per_s_ratio, tpot_ratio (candidate / baseline; null when
                    a side has no figure)
    only_in_baseline, only_in_candidate [level names]

Pure functions but `load_bench`; tests in tests/unit/test_bench_compare.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmfleet.bench import SCHEMA, SCHEMA_FILE
from llmfleet.report import format_table, schema_problems

COMPARE_SCHEMA = "llmfleet.bench-compare/1"
COMPARE_SCHEMA_FILE = SCHEMA_FILE.parent / "bench-compare-1.schema.json"
#: The settings two runs must share for their figures to compare.
WORKLOAD = (
    "requests_per_level",
    "input_tokens",
    "output_tokens",
    "ignore_eos",
    "temperature",
    "seed",
    "prompt_cache",
)
#: A bench document larger than this is not read (a level holds no per-request data).
MAX_BYTES = 16 * 2**20


class CompareError(ValueError):
    """A result that cannot be compared (unreadable, not a bench result); says which."""


def load_bench(path: Path) -> dict[str, Any]:
    """A ``llmfleet.bench/2`` document from `path`, checked against its schema."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise CompareError(f"{path}: over {MAX_BYTES // 2**20} MiB: not a bench result")
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CompareError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CompareError(f"{path}: not JSON ({exc})") from None
    found = document.get("schema") if isinstance(document, Mapping) else None
    if found != SCHEMA:
        raise CompareError(f"{path}: schema is {found!r}, not {SCHEMA!r} (llmfleet bench --json)")
    problems = schema_problems(document, SCHEMA_FILE)
    if problems:
        raise CompareError(f"{path}: not a valid {SCHEMA} document: {'; '.join(problems)}")
    return dict(document)


def ratio(candidate: float | None, baseline: float | None) -> float | None:
    """candidate / baseline to 4 places; None when either is missing or the baseline is 0."""
    if candidate is None or not baseline:
        return None
    return round(candidate / baseline, 4)


def _side(level: Mapping[str, Any], tpot_basis: str) -> dict[str, Any]:
    speculative = level.get("speculative") or {}
    return {
        "succeeded": level["succeeded"],
        "failed": level["failed"],
        "output_tokens_per_s": level["throughput"]["output_tokens_per_s"],
        "tpot_s": level["tpot_s"][tpot_basis],
        "ttft_p50_s": level["ttft_s"]["p50"],
        "acceptance_rate": speculative.get("acceptance_rate"),
    }


def _source(document: Mapping[str, Any], file: str | None) -> dict[str, Any]:
    return {
        "file": file,
        **{key: document.get(key) for key in ("endpoint", "model", "started_at", "tool")},
    }


def compare(
    baseline: Mapping[str, Any],
    candidate: Mapping[str, Any],
    baseline_file: str | None = None,
    candidate_file: str | None = None,
) -> dict[str, Any]:
    """The ``llmfleet.bench-compare/1`` document of two bench results (levels by name, in the
    baseline's order)."""
    base_settings, new_settings = baseline["settings"], candidate["settings"]
    differences = [
        f"{key}: {base_settings.get(key)!r} (baseline) vs {new_settings.get(key)!r} (candidate)"
        for key in WORKLOAD
        if base_settings.get(key) != new_settings.get(key)
    ]
    new_levels = {level["name"]: level for level in candidate["levels"]}
    base_names = [level["name"] for level in baseline["levels"]]
    levels = []
    for base in baseline["levels"]:
        new = new_levels.get(base["name"])
        if new is None:
            continue
        both_p50 = base["tpot_s"]["p50"] is not None and new["tpot_s"]["p50"] is not None
        basis = "p50" if both_p50 else "mean"
        base_side, new_side = _side(base, basis), _side(new, basis)
        levels.append(
            {
                "name": base["name"],
                "tpot_basis": basis,
                "baseline": base_side,
                "candidate": new_side,
                "output_tokens_per_s_ratio": ratio(
                    new_side["output_tokens_per_s"], base_side["output_tokens_per_s"]
                ),
                "tpot_ratio": ratio(new_side["tpot_s"], base_side["tpot_s"]),
            }
        )
    return {
        "schema": COMPARE_SCHEMA,
        "baseline": _source(baseline, baseline_file),
        "candidate": _source(candidate, candidate_file),
        "workload_differences": differences,
        "levels": levels,
        "only_in_baseline": [name for name in base_names if name not in new_levels],
        "only_in_candidate": [name for name in new_levels if name not in base_names],
    }


COLUMNS = (
    "level",
    "tok/s base",
    "tok/s new",
    "tok/s ratio",
    "TPOT ms base",
    "TPOT ms new",
    "TPOT ratio",
    "accept base",
    "accept new",
)


def _cell(value: float | None, digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}{unit}"


def format_comparison(document: Mapping[str, Any]) -> str:
    """The comparison as text: both sources, a row per level, then the notes."""

    def source(side: Mapping[str, Any]) -> str:
        where = f"{side['file']}: " if side.get("file") else ""
        model = side.get("model") or "-"
        return f"{where}{side.get('endpoint')}, {model}, {side.get('started_at')}"

    lines = [
        f"baseline    {source(document['baseline'])}",
        f"candidate   {source(document['candidate'])}",
        "ratio       candidate / baseline: tokens/s above 1 and TPOT below 1 are faster",
    ]
    if document["workload_differences"]:
        lines.append(
            "WORKLOADS DIFFER, the ratios compare different work: "
            + "; ".join(document["workload_differences"])
        )
    rows = []
    for level in document["levels"]:
        base, new = level["baseline"], level["candidate"]
        basis = "" if level["tpot_basis"] == "p50" else " (mean)"
        rows.append(
            (
                level["name"],
                _cell(base["output_tokens_per_s"]),
                _cell(new["output_tokens_per_s"]),
                _cell(level["output_tokens_per_s_ratio"], 3, unit="x"),
                _cell(base["tpot_s"], 1, 1000) + basis,
                _cell(new["tpot_s"], 1, 1000) + basis,
                _cell(level["tpot_ratio"], 3, unit="x"),
                _cell(base["acceptance_rate"], 1, 100, "%"),
                _cell(new["acceptance_rate"], 1, 100, "%"),
            )
        )
    lines.extend(["", format_table(rows, COLUMNS) if rows else "no level in common"])
    notes = []
    if any(level["tpot_basis"] == "mean" for level in document["levels"]):
        notes.append("TPOT (mean): a side has too few samples for a p50, both sides' means")
    for key, side in (("only_in_baseline", "baseline"), ("only_in_candidate", "candidate")):
        if document[key]:
            notes.append(f"only in the {side}: {', '.join(document[key])}")
    for level in document["levels"]:
        for side in ("baseline", "candidate"):
            if level[side]["failed"]:
                notes.append(
                    f"{level['name']}: {level[side]['failed']} requests failed in the {side} "
                    "(its figures are of the others)"
                )
    if notes:
        lines.extend(["", *notes])
    return "\n".join(lines)
