"""The CLI's shared pieces: the option rows, the subcommand table, --api-key-file, --json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from llmfleet import bench, cli, cli_options


def test_number_options_types_defaults_and_help() -> None:
    parser = argparse.ArgumentParser()
    cli_options.add_options(
        parser,
        cli_options.number("--requests", int, 20, "requests per level"),
        cli_options.number("--timeout", float, 120.0, "seconds"),
        cli_options.number("--duration", float, 600.0, "seconds at most", show_default=False),
    )
    assert vars(parser.parse_args([])) == {"requests": 20, "timeout": 120.0, "duration": 600.0}
    assert vars(parser.parse_args(["--requests", "3", "--timeout", "1.5"]))["requests"] == 3
    assert parser.parse_args(["--timeout", "1.5"]).timeout == 1.5
    text = " ".join(parser.format_help().split())
    assert "--requests N requests per level (default: 20)" in text
    assert "--timeout S seconds (default: 120)" in text
    assert "--duration S seconds at most" in text and "(default: 600)" not in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--requests", "1.5"])


def test_value_switch_and_basic_auth_rows() -> None:
    parser = argparse.ArgumentParser()
    cli_options.add_options(
        parser,
        cli_options.value("target", "URL", "where to"),
        cli_options.value(("--output", "-o"), "DIR", "the folder", required=True),
        cli_options.switch(("--quiet", "-q"), "say less"),
        *cli_options.basic_auth(
            "--metrics-url", "metrics", "the metrics", "the user", "the password file"
        ),
    )
    args = parser.parse_args(["http://h.test", "-o", "out", "-q", "--metrics-user", "u"])
    assert (args.target, args.output, args.quiet, args.metrics_url) == (
        "http://h.test",
        "out",
        True,
        None,
    )
    text = " ".join(parser.format_help().split())
    for shown in (
        "--metrics-url URL the metrics",
        "--metrics-user USER the user",
        "--metrics-password-file PATH the password file",
        "--quiet, -q say less",
    ):
        assert shown in text
    with pytest.raises(
        ValueError, match="give --metrics-user and --metrics-password-file together"
    ):
        cli_options.check_basic_auth_pair(args, "metrics")
    args.metrics_password_file = "/run/secret"
    cli_options.check_basic_auth_pair(args, "metrics")


def test_every_subcommand_runs_something_or_has_subcommands() -> None:
    def check(commands: tuple[cli.Command, ...]) -> None:
        for command in commands:
            assert (command.run is None) == bool(command.subcommands), command.name
            check(command.subcommands)

    check(cli.commands())
    assert cli.build_parser().parse_args(["bundle", "verify", "b"]).func is cli.cmd_bundle_verify


def test_fail_says_which_command_and_returns_the_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.fail("load", ValueError("no endpoint"), 2) == 2
    assert capsys.readouterr().err == "llmfleet load: no endpoint\n"


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
