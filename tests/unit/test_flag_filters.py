"""Flags rendered from data: one argument each, and the ones that are not one plain word."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_module_file

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "llmfleet_flags.py"
flags = load_module_file("llmfleet_flag_filters", PLUGIN)


def test_values_switches_and_order() -> None:
    rendered = flags.flag_arguments(
        {"web.listen-address": "0.0.0.0:9100", "collector.systemd": True, "collector.wifi": False}
    )
    assert rendered == [
        "--web.listen-address=0.0.0.0:9100",
        "--collector.systemd",
        "--no-collector.wifi",
    ]


def test_a_regex_value_stays_one_argument() -> None:
    [arg] = flags.flag_arguments({"collector.vmstat.fields": "^(oom_kill|pgpg|pswp|pg.*fault).*"})
    assert flags.unsafe_arguments([arg]) == []


@pytest.mark.parametrize(
    "value",
    [
        "0.0.0.0:9090' ; touch /tmp/owned ; '",  # the shell-from-data finding
        '127.0.0.1:9090"',
        "$(id)",
        "`id`",
        "15d 30d",
        "a\\b",
        "line\nbreak",
        "",
    ],
)
def test_values_that_are_not_one_plain_word_are_found(value: str) -> None:
    [arg] = flags.flag_arguments({"web.listen-address": value})
    assert flags.unsafe_arguments([arg]) == [arg]


def test_an_empty_value_is_refused_unless_allowed() -> None:
    [arg] = flags.flag_arguments({"cluster.listen-address": ""})
    assert flags.unsafe_arguments([arg]) == [arg]
    assert flags.unsafe_arguments([arg], allow_empty_values=True) == []
    assert flags.unsafe_arguments(["--x=$(id)"], allow_empty_values=True) == ["--x=$(id)"]
