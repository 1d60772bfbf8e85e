"""The CLI's shared pieces: number options, --api-key-file, --json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from llmfleet import bench, cli


def test_add_number_arguments_types_defaults_and_help() -> None:
    parser = argparse.ArgumentParser()
    cli.add_number_arguments(
        parser,
        ("--requests", int, 20, "requests per level"),
        ("--timeout", float, 120.0, "seconds"),
    )
    assert vars(parser.parse_args([])) == {"requests": 20, "timeout": 120.0}
    assert vars(parser.parse_args(["--requests", "3", "--timeout", "1.5"])) == {
        "requests": 3,
        "timeout": 1.5,
    }
    text = " ".join(parser.format_help().split())
    assert "--requests N requests per level (default: 20)" in text
    assert "--timeout S seconds (default: 120)" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--requests", "1.5"])


def test_bench_number_options() -> None:
    args = cli.build_parser().parse_args(["bench", "http://h.test", "--time-limit", "5"])
    assert (args.requests, args.max_tokens) == (bench.DEFAULT_REQUESTS, bench.DEFAULT_MAX_TOKENS)
    assert (args.timeout, args.time_limit) == (bench.DEFAULT_TIMEOUT_S, 5.0)


def test_the_api_key_comes_from_the_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(" sk-test-1 \n")
    monkeypatch.setenv("LLMFLEET_API_KEY", "sk-from-env")
    assert cli._bench_api_key(argparse.Namespace(api_key_file=str(key_file))) == "sk-test-1"
    assert cli._bench_api_key(argparse.Namespace(api_key_file=None)) == "sk-from-env"
    monkeypatch.delenv("LLMFLEET_API_KEY")
    assert cli._bench_api_key(argparse.Namespace(api_key_file=None)) is None
    key_file.write_text("\n")
    with pytest.raises(ValueError, match=r"the API key file .* is empty"):
        cli._bench_api_key(argparse.Namespace(api_key_file=str(key_file)))


def test_write_json_is_indented_and_atomic(tmp_path: Path) -> None:
    target = tmp_path / "results" / "bench.json"
    cli.write_json(target, {"levels": [1, 4]})
    assert target.read_text() == '{\n  "levels": [\n    1,\n    4\n  ]\n}\n'
    assert json.loads(target.read_text()) == {"levels": [1, 4]}
    assert [p.name for p in target.parent.iterdir()] == ["bench.json"]
