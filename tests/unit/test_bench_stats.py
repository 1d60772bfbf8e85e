"""The pure parts of `llmfleet bench`: statistics, objectives and goodput, arrival times, the
metrics cross-check, and the exact-length prompts. Expected values are computed by hand in
the comments, by the method the module states (linear interpolation, numpy's default)."""

from __future__ import annotations

import random
import re
import statistics

import pytest

from llmfleet import bench_stats as stats
from llmfleet.bench_prompts import WORDS, PromptError, exact_prompt, word_text

# -- percentiles and distributions ----------------------------------------------------------------


def test_percentile_linear_interpolation() -> None:
    values = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]  # unsorted on purpose
    assert stats.percentile(values, 0) == 1
    assert stats.percentile(values, 100) == 10
    assert stats.percentile(values, 50) == pytest.approx(5.5)  # rank 4.5: 5 + 0.5 * (6 - 5)
    assert stats.percentile(values, 90) == pytest.approx(9.1)  # rank 8.1: 9 + 0.1 * (10 - 9)
    assert stats.percentile(values, 99) == pytest.approx(9.91)  # rank 8.91: 9 + 0.91 * (10 - 9)
    assert stats.percentile(values, 25) == pytest.approx(3.25)  # rank 2.25: 3 + 0.25 * (4 - 3)
    assert stats.percentile([4.2], 99) == 4.2
    assert stats.percentile([], 50) is None
    with pytest.raises(ValueError):
        stats.percentile(values, 101)


def test_percentile_matches_statistics_inclusive_method() -> None:
    sample = [random.Random(seed).expovariate(2) for seed in range(37)]
    cut_points = statistics.quantiles(sample, n=100, method="inclusive")
    for p in range(1, 100):
        assert stats.percentile(sample, p) == pytest.approx(cut_points[p - 1])


def test_how_many_samples_a_percentile_needs() -> None:
    # n >= ceil(100 / (100 - p)): at least one sample above the percentile on average
    assert [stats.min_samples(p) for p in (50, 90, 95, 99, 99.9)] == [2, 10, 20, 100, 1000]
    with pytest.raises(ValueError):
        stats.min_samples(100)


def test_distribution_by_hand() -> None:
    values = [0.1 * k for k in range(10, 0, -1)]  # 1.0 .. 0.1
    figures = stats.distribution(values)
    assert figures["n"] == 10
    assert figures["mean"] == pytest.approx(0.55)
    assert (figures["min"], figures["max"]) == (pytest.approx(0.1), pytest.approx(1.0))
    assert figures["p50"] == pytest.approx(0.55)  # rank 4.5 between 0.5 and 0.6
    assert figures["p90"] == pytest.approx(0.91)  # rank 8.1: 0.9 + 0.1 * 0.1
    assert figures["p99"] is None  # 10 samples cannot say p99


def test_distribution_reports_each_percentile_from_its_sample_count() -> None:
    assert stats.distribution([]) == {
        "n": 0,
        "mean": None,
        "min": None,
        "max": None,
        "p50": None,
        "p90": None,
        "p99": None,
    }
    one = stats.distribution([0.25])
    assert (one["n"], one["mean"], one["p50"]) == (1, 0.25, None)
    ninety_nine = stats.distribution(float(k) for k in range(99))
    assert ninety_nine["p90"] == pytest.approx(88.2)  # rank 0.9 * 98 = 88.2
    assert ninety_nine["p99"] is None
    hundred = stats.distribution(float(k) for k in range(100))
    assert hundred["p99"] == pytest.approx(98.01)  # rank 0.99 * 99 = 98.01


def test_tpot_and_inter_token_latencies_by_hand() -> None:
    # 5 tokens: the first at 0.2 s, the stream ends at 1.0 s: (1.0 - 0.2) / (5 - 1) = 0.2
    assert stats.tpot(1.0, 0.2, 5) == pytest.approx(0.2)
    assert stats.tpot(1.0, 0.2, 2) == pytest.approx(0.8)
    assert stats.tpot(1.0, 0.2, 1) is None
    assert stats.tpot(1.0, 0.2, 0) is None
    gaps = stats.inter_token_latencies([0.2, 0.25, 0.4, 0.7])
    assert gaps == [pytest.approx(0.05), pytest.approx(0.15), pytest.approx(0.3)]
    assert stats.inter_token_latencies([0.2]) == []


# -- arrivals --------------------------------------------------------------------------------------


def test_poisson_arrivals_are_seeded_and_have_the_asked_rate() -> None:
    times = stats.poisson_arrivals(5.0, 20001, seed=7)
    assert times[0] == 0.0
    assert times == sorted(times)
    assert times == stats.poisson_arrivals(5.0, 20001, seed=7)
    assert times != stats.poisson_arrivals(5.0, 20001, seed=8)
    gaps = stats.inter_token_latencies(times)
    # exponential gaps: mean 1 / rate, standard deviation equal to the mean
    assert statistics.fmean(gaps) == pytest.approx(0.2, rel=0.03)
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, rel=0.05)
    # over many seeds, the rate measured over 200 requests centres on the asked rate
    rates = [199 / stats.poisson_arrivals(2.0, 200, seed=s)[-1] for s in range(200)]
    assert statistics.fmean(rates) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError):
        stats.poisson_arrivals(0, 3, seed=1)


# -- objectives and goodput ------------------------------------------------------------------------


def test_parse_objectives() -> None:
    assert stats.parse_objective("ttft=500ms") == stats.Objective("ttft", 0.5)
    assert stats.parse_objective("tpot=50") == stats.Objective("tpot", 0.05)  # a bare number: ms
    assert stats.parse_objective("E2E = 2.5s") == stats.Objective("e2e", 2.5)
    assert stats.parse_objective("e2el=1500ms") == stats.Objective("e2e", 1.5)
    assert stats.parse_objectives(["ttft=1s", "tpot=20ms"]) == (
        stats.Objective("ttft", 1.0),
        stats.Objective("tpot", 0.02),
    )
    for bad in ("ttft", "itl=5ms", "ttft=fast", "ttft=5min", "ttft=0ms", "=5ms"):
        with pytest.raises(ValueError, match=r"NAME=VALUE|more than 0"):
            stats.parse_objective(bad)
    with pytest.raises(ValueError, match="twice for ttft"):
        stats.parse_objectives(["ttft=1s", "ttft=2s"])


def test_goodput_by_hand() -> None:
    objectives = (stats.Objective("ttft", 0.5), stats.Objective("tpot", 0.05))
    requests = [
        {"ttft": 0.4, "tpot": 0.04, "e2e": 3.0},  # good
        {"ttft": 0.5, "tpot": 0.05, "e2e": 3.0},  # good: the limits are inclusive
        {"ttft": 0.6, "tpot": 0.01, "e2e": 3.0},  # TTFT too long
        {"ttft": 0.1, "tpot": 0.07, "e2e": 3.0},  # TPOT too long
        {"ttft": 0.1, "tpot": None, "e2e": 0.1},  # one token: no TPOT to hold: good
        None,  # failed: never good
    ]
    result = stats.goodput(requests, objectives, wall_s=2.0)
    assert result == {
        "objectives": {"ttft": 0.5, "tpot": 0.05},
        "good": 3,
        "sent": 6,
        "fraction": 0.5,
        "requests_per_s": 1.5,  # 3 good / 2 s
    }
    assert stats.meets({"ttft": 0.1, "e2e": 9.0}, [stats.Objective("e2e", 10.0)])
    assert not stats.meets({"ttft": 0.1, "e2e": 11.0}, [stats.Objective("e2e", 10.0)])
    assert stats.goodput([], objectives, wall_s=0)["fraction"] is None


# -- the server's counters -------------------------------------------------------------------------

METRICS_TEXT = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 1200
llamacpp:prompt_tokens_cached_total 300
llamacpp:tokens_predicted_total 6.4e2
llamacpp:requests_processing{slot="0"} 1
llamacpp:requests_processing{slot="1"} 2
not a sample line
"""


def test_parse_metrics() -> None:
    samples = stats.parse_metrics(METRICS_TEXT)
    assert samples[stats.PROMPT_COUNTER] == 1200
    assert samples[stats.CACHED_COUNTER] == 300
    assert samples[stats.OUTPUT_COUNTER] == 640
    assert samples["llamacpp:requests_processing"] == 3  # label sets summed


def test_relative_difference() -> None:
    assert stats.relative_difference(101, 100) == pytest.approx(0.01)
    assert stats.relative_difference(90, 100) == pytest.approx(-0.1)
    assert stats.relative_difference(0, 0) == 0.0
    assert stats.relative_difference(5, 0) is None


def counters(prompt: float, cached: float | None, output: float) -> dict[str, float]:
    samples = {stats.PROMPT_COUNTER: prompt, stats.OUTPUT_COUNTER: output}
    if cached is not None:
        samples[stats.CACHED_COUNTER] = cached
    return samples


def test_cross_check_matches_with_cached_tokens() -> None:
    before = counters(1000, 100, 500)
    after = counters(1000 + 900, 100 + 100, 500 + 400)
    client = stats.ClientTokens(prompt=1000, prompt_cached=100, prompt_processed=900, output=400)
    check = stats.cross_check(client, before, after)
    assert check["prompt_tokens"] == {
        "client": 1000,
        "server": 1000,  # processed 900 + cached 100
        "relative_difference": 0.0,
        "flagged": False,
        "basis": "all",
    }
    assert check["output_tokens"]["flagged"] is False
    assert (check["flagged"], check["problems"], check["tolerance"]) == (False, [], 0.01)


def test_cross_check_flags_a_difference_over_one_percent() -> None:
    client = stats.ClientTokens(prompt=1000, prompt_cached=0, prompt_processed=1000, output=400)
    after = counters(1000, 0, 410)  # the server generated 10 tokens more: 400 - 410 = -2.44 %
    check = stats.cross_check(client, counters(0, 0, 0), after)
    assert check["output_tokens"]["relative_difference"] == pytest.approx(-10 / 410, abs=1e-6)
    assert check["output_tokens"]["flagged"] is True
    assert check["prompt_tokens"]["flagged"] is False
    assert check["flagged"] is True
    within = stats.cross_check(client, counters(0, 0, 0), counters(1000, 0, 404))  # -0.99 %
    assert within["flagged"] is False


def test_cross_check_without_the_cached_counter_compares_processed_tokens() -> None:
    client = stats.ClientTokens(prompt=1000, prompt_cached=90, prompt_processed=910, output=400)
    check = stats.cross_check(client, counters(0, None, 0), counters(910, None, 400))
    assert check["prompt_tokens"]["basis"] == "processed"
    assert (check["prompt_tokens"]["client"], check["prompt_tokens"]["server"]) == (910, 910)
    assert check["flagged"] is False


def test_cross_check_names_missing_and_reset_counters() -> None:
    client = stats.ClientTokens(prompt=10, prompt_cached=0, prompt_processed=10, output=4)
    missing = stats.cross_check(client, {}, {})
    assert missing["prompt_tokens"] is None and missing["output_tokens"] is None
    assert missing["flagged"] is True
    assert any("does not export llamacpp:tokens_predicted_total" in p for p in missing["problems"])
    restarted = stats.cross_check(client, counters(500, 0, 500), counters(10, 0, 4))
    assert any("restarted" in problem for problem in restarted["problems"])


def test_cross_check_compares_draft_tokens_and_counts_drafts() -> None:
    # 3 requests drafted 40, 35 and 45 tokens (120); the model kept 30, 30 and 36 (96); the
    # server checked 24 drafts. Its counters moved by the same, but one accepted token more.
    client = stats.ClientTokens(
        prompt=60, prompt_cached=0, prompt_processed=60, output=96, draft=120, draft_accepted=96
    )
    before = {
        **counters(0, 0, 0),
        stats.DRAFT_COUNTER: 500,
        stats.ACCEPTED_COUNTER: 400,
        stats.DRAFTS_COUNTER: 90,
    }
    after = {
        **counters(60, 0, 96),
        stats.DRAFT_COUNTER: 620,
        stats.ACCEPTED_COUNTER: 497,
        stats.DRAFTS_COUNTER: 114,
    }
    check = stats.cross_check(client, before, after)
    assert check["draft_tokens"] == {
        "client": 120,
        "server": 120,
        "relative_difference": 0.0,
        "flagged": False,
    }
    assert check["accepted_draft_tokens"] == {
        "client": 96,
        "server": 97,
        "relative_difference": pytest.approx(-1 / 97, abs=1e-6),  # -1.03 %: over 1 %
        "flagged": True,
    }
    assert check["drafts"] == 24
    assert check["flagged"] is True and check["problems"] == []


def test_cross_check_without_draft_counters_says_nothing_of_drafts() -> None:
    client = stats.ClientTokens(prompt=10, prompt_cached=0, prompt_processed=10, output=4)
    check = stats.cross_check(client, counters(0, 0, 0), counters(10, 0, 4))
    assert (check["draft_tokens"], check["accepted_draft_tokens"], check["drafts"]) == (
        None,
        None,
        None,
    )
    assert check["flagged"] is False and check["problems"] == []
    # exported but still (a server without a draft model): compared, 0 against 0
    idle = {stats.DRAFT_COUNTER: 0, stats.ACCEPTED_COUNTER: 0, stats.DRAFTS_COUNTER: 0}
    check = stats.cross_check(client, {**counters(0, 0, 0), **idle}, {**counters(10, 0, 4), **idle})
    assert check["draft_tokens"]["relative_difference"] == 0.0 and check["drafts"] == 0
    assert check["flagged"] is False
    restarted = stats.cross_check(
        client,
        {**counters(0, 0, 0), **idle, stats.DRAFT_COUNTER: 50},
        {**counters(10, 0, 4), **idle},
    )
    assert restarted["draft_tokens"] is None
    assert any(f"{stats.DRAFT_COUNTER} went down" in problem for problem in restarted["problems"])


def test_acceptance_rate_and_mean_accepted_length() -> None:
    assert stats.acceptance_rate(120, 96) == 0.8
    assert stats.acceptance_rate(3, 2) == 0.6667  # rounded to 4 places
    assert stats.acceptance_rate(0, 0) is None and stats.acceptance_rate(None, 5) is None
    # 96 accepted over 24 drafts: each check of a draft gave 4 accepted + the model's own token
    assert stats.mean_accepted_length(96, 24) == 5.0
    assert stats.mean_accepted_length(7, 3) == 3.3333
    assert stats.mean_accepted_length(5, 0) is None and stats.mean_accepted_length(None, 3) is None


# -- prompts ---------------------------------------------------------------------------------------


def four_letter_pieces(text: str) -> list[str]:
    """A tokenizer: each word in pieces of up to four letters, the first with its space."""
    return re.findall(r" ?[^ ]{1,4}", text)


def test_word_text_is_deterministic_and_distinct() -> None:
    text = word_text(0, 3, 12)
    assert text == word_text(0, 3, 12)
    assert len(text.split()) == 12 and set(text.split()) <= set(WORDS)
    assert text != word_text(0, 4, 12)
    assert text != word_text(1, 3, 12)
    assert text != word_text(0, 3, 12, draw=1)


@pytest.mark.parametrize("tokens", [1, 2, 7, 64, 333])
def test_exact_prompt_has_exactly_the_asked_tokens(tokens: int) -> None:
    texts = [exact_prompt(four_letter_pieces, 0, index, tokens) for index in range(20)]
    assert all(len(four_letter_pieces(text)) == tokens for text in texts)
    assert len(set(texts)) == 20
    assert texts[0] == exact_prompt(four_letter_pieces, 0, 0, tokens)


def test_exact_prompt_moves_its_cut_when_a_cut_tokenizes_differently() -> None:
    checks: list[int] = []

    def merging(text: str) -> list[str]:
        """A text that ends inside a word is one token more than its pieces."""
        pieces = four_letter_pieces(text)
        last = text.split(" ")[-1] if text else ""
        return [*pieces, "+"] if last and last not in WORDS else pieces

    def counting(text: str) -> list[str]:
        checks.append(len(text))
        return merging(text)

    for index in range(10):
        checks.clear()
        text = exact_prompt(counting, 0, index, 40)
        assert len(merging(text)) == 40
        if len(checks) > 2:  # the first cut was not exact: it moved
            break
    else:
        pytest.fail("no prompt needed a second cut: the test's tokenizer is too kind")


def test_exact_prompt_gives_up_with_a_message() -> None:
    def even_only(text: str) -> list[str]:
        pieces = four_letter_pieces(text)
        return [*pieces, "x"] if len(pieces) % 2 else pieces

    with pytest.raises(PromptError, match=r"could not cut prompt 2 \(seed 5\) to exactly 7 tokens"):
        exact_prompt(even_only, 5, 2, 7)
    with pytest.raises(ValueError):
        exact_prompt(four_letter_pieces, 0, 0, 0)
