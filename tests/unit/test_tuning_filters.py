"""The tuner's decisions: the grid of a host class, its bound, the key, and the choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_module_file

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "llmfleet_tuning.py"
tuning = load_module_file("llmfleet_tuning_filters", PLUGIN)


def level(tokens: float | None, ttft: float | None, tpot: float | None, failed: int = 0) -> dict:
    """A level of `llmfleet bench`'s JSON (schema llmfleet.bench/2), the figures the tuner reads."""
    return {
        "failed": failed,
        "throughput": {"output_tokens_per_s": tokens},
        "ttft_s": {"p50": ttft},
        "tpot_s": {"p50": tpot},
    }


def test_grid_of_a_two_core_cpu_host() -> None:
    grid = tuning.default_grid(2, 2, 4)
    assert grid["threads"] == [2]  # physical cores = CPUs: one value, not two
    assert grid["parallel_slots"] == [4, 8]
    assert grid["precision"] == ["f16", "q8_0"]
    assert len(tuning.candidates(grid)) == 4


def test_grid_of_a_gpu_host_with_hyperthreads() -> None:
    grid = tuning.default_grid(16, 32, 8, on_gpu=True)
    assert grid["threads"] == [16, 32]
    assert grid["threads_batch"] == [32]
    assert grid["flash_attention"] == ["on"]
    assert len(tuning.candidates(grid)) == 8


def test_a_grid_beyond_the_bound_is_refused_naming_its_size() -> None:
    grid = {"threads": [1, 2, 3], "parallel_slots": [1, 2, 4]}
    with pytest.raises(tuning.TuningError, match="9 candidates, more than the limit of 8"):
        tuning.candidates(grid, 8)


@pytest.mark.parametrize(
    ("grid", "says"),
    [
        ({"threads": [2], "turbo": [True]}, "unknown tuning knobs turbo"),
        ({"threads": []}, "gives threads no value"),
    ],
)
def test_bad_grids_are_named(grid: dict, says: str) -> None:
    with pytest.raises(tuning.TuningError, match=says):
        tuning.candidates(grid)


def test_the_draft_model_on_and_off_is_a_dimension_where_the_model_has_one() -> None:
    grid = {"threads": [2], "parallel_slots": [2, 4], "speculative": [True, False]}
    assert tuning.candidates(grid, 8, has_draft=True) == [
        {"threads": 2, "parallel_slots": 2, "speculative": True},
        {"threads": 2, "parallel_slots": 2, "speculative": False},
        {"threads": 2, "parallel_slots": 4, "speculative": True},
        {"threads": 2, "parallel_slots": 4, "speculative": False},
    ]
    for on in ([True, False], ["true"], [True]):
        with pytest.raises(tuning.TuningError, match="the model has no draft model"):
            tuning.candidates({**grid, "speculative": on}, 8, has_draft=False)
    # off alone is the server without a draft: allowed anywhere
    assert len(tuning.candidates({**grid, "speculative": [False]}, 8, has_draft=False)) == 2
    # the default grid leaves it out (twice the candidates, past the default bound)
    assert "speculative" not in tuning.default_grid(2, 2, 4)


@pytest.mark.parametrize("bad", [0, -1, "x", None])
def test_bad_host_figures_are_named(bad) -> None:
    with pytest.raises(tuning.TuningError, match="must be a positive whole number"):
        tuning.default_grid(bad, 2, 4)


def test_the_key_changes_with_any_part_and_not_with_key_order() -> None:
    base = tuning.tuning_key({"cores": 2, "gpus": []}, "build-1", "sha", {"threads": [2]})
    assert base == tuning.tuning_key({"gpus": [], "cores": 2}, "build-1", "sha", {"threads": [2]})
    assert base != tuning.tuning_key({"cores": 2, "gpus": []}, "build-2", "sha", {"threads": [2]})
    assert len(base) == 64


def test_choose_the_most_tokens_within_the_objectives() -> None:
    objectives = {"ttft_p50_ms": 500, "tpot_p50_ms": 50}
    results = [
        {"settings": {"parallel_slots": 4}, "level": level(120.0, 0.20, 0.030)},
        {"settings": {"parallel_slots": 8}, "level": level(150.0, 0.80, 0.040)},  # TTFT too slow
        {"settings": {"parallel_slots": 2}, "level": level(100.0, 0.10, 0.020)},
    ]
    choice = tuning.choose(results, objectives)
    assert choice["settings"] == {"parallel_slots": 4}
    assert choice["met_objectives"] is True
    assert choice["figures"] == {"output_tokens_per_s": 120.0, "ttft_p50_ms": 200.0,
                                 "tpot_p50_ms": 30.0}  # fmt: skip
    assert "2 candidates within the objectives" in choice["reason"]
    [slow] = [row for row in choice["table"] if row["settings"] == {"parallel_slots": 8}]
    assert slow["misses"] == ["TTFT p50 800.0 ms > 500 ms"]


def test_a_tie_goes_to_the_sooner_first_token() -> None:
    results = [
        {"settings": {"threads": 1}, "level": level(100.0, 0.30, 0.02)},
        {"settings": {"threads": 2}, "level": level(100.0, 0.10, 0.02)},
    ]
    assert tuning.choose(results, {})["settings"] == {"threads": 2}


def test_when_none_meets_the_objectives_the_fastest_is_kept_and_said_so() -> None:
    results = [
        {"settings": {"a": 1}, "level": level(90.0, 2.0, 0.2)},
        {"settings": {"a": 2}, "level": level(95.0, 3.0, 0.3)},
    ]
    choice = tuning.choose(results, {"ttft_p50_ms": 100})
    assert choice["settings"] == {"a": 2}
    assert choice["met_objectives"] is False
    assert choice["reason"].startswith("no candidate met the objectives")


def test_a_candidate_with_failed_requests_does_not_meet_the_objectives() -> None:
    results = [
        {"settings": {"a": 1}, "level": level(200.0, 0.1, 0.01, failed=3)},
        {"settings": {"a": 2}, "level": level(100.0, 0.1, 0.01)},
    ]
    choice = tuning.choose(results, {})
    assert choice["settings"] == {"a": 2}
    assert choice["table"][0]["misses"] == ["3 failed requests"]


def test_nothing_measured_is_an_error() -> None:
    with pytest.raises(tuning.TuningError, match="no candidate was measured"):
        tuning.choose([], {})
    with pytest.raises(tuning.TuningError, match="no candidate produced tokens"):
        tuning.choose([{"settings": {}, "level": level(None, None, None)}], {})
