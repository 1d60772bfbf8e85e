"""`llmfleet`: the command line next to the playbooks."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmfleet import __version__
from llmfleet.cli_options import (
    Option,
    add_options,
    basic_auth,
    check_basic_auth_pair,
    number,
    switch,
    value,
)
from llmfleet.fileio import read_secret, write_atomic
from llmfleet.report_cli import REPORT_OPTIONS, run_report


def cmd_report(args: argparse.Namespace) -> int:
    return run_report(args)


def cmd_bundle_build(args: argparse.Namespace) -> int:
    from llmfleet.bundle.apt_repo import AptError
    from llmfleet.bundle.build import BuildError, build_bundle
    from llmfleet.bundle.fetch import Fetcher, FetchError, progress_stream
    from llmfleet.bundle.images import ImageError
    from llmfleet.bundle.signing import SigningError, default_signing_home
    from llmfleet.bundle.spec import SpecError, load_spec

    try:
        spec = load_spec(Path(args.spec), os.environ)
    except SpecError as exc:
        print(f"the spec is not valid ({len(exc.problems)} problems):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    home = Path(args.signing_home) if args.signing_home else default_signing_home(os.environ)
    fetcher = Fetcher(retries=args.retries, progress=progress_stream(args.quiet))
    try:
        result = build_bundle(
            spec,
            Path(args.output),
            signing_home=home,
            cache=Path(args.cache) if args.cache else None,
            quiet=args.quiet,
            fetcher=fetcher,
        )
    except (BuildError, FetchError, AptError, SigningError, ImageError) as exc:
        print(f"bundle build failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a folder or file the build cannot write or read
        where = f" {exc.filename}" if exc.filename else ""
        print(f"bundle build failed:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bundle build interrupted: nothing partial is left under the bundle", file=sys.stderr)
        return 130
    print("\n".join(result.summary()))
    return 0


#: What `bundle verify` takes as a pinned key: a sha256 of the keyring file, a fingerprint.
KEY_SHA256_RE = re.compile(r"[0-9A-Fa-f]{64}")
FINGERPRINT_RE = re.compile(r"(?:[0-9A-Fa-f]\s*){40}")
PIN_FORMS = {
    "--key-sha256": "a sha256 (64 hex digits) of keys/llmfleet-bundle.gpg",
    "--fingerprint": "a full key fingerprint (40 hex digits)",
}


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from llmfleet.bundle.signing import SigningError
    from llmfleet.bundle.verify import verify_bundle

    bundle = Path(args.bundle)
    if not bundle.is_dir():
        print(f"{bundle} is not a folder", file=sys.stderr)
        return 2
    for flag, given, pattern in (
        ("--key-sha256", args.key_sha256, KEY_SHA256_RE),
        ("--fingerprint", args.fingerprint, FINGERPRINT_RE),
    ):
        if given is not None and not pattern.fullmatch(given.strip()):
            print(f"bundle verify: {flag} {given!r} is not {PIN_FORMS[flag]}", file=sys.stderr)
            return 2
    try:
        problems, summary = verify_bundle(
            bundle, fingerprint=args.fingerprint, key_sha256=args.key_sha256
        )
    except SigningError as exc:
        print(f"bundle verify failed: {exc}", file=sys.stderr)
        return 2
    if problems:
        for problem in problems:
            print(problem.line())
        print(f"FAILED: {len(problems)} problems in the bundle {bundle}", file=sys.stderr)
        return 1
    assert summary is not None
    print(summary.line())
    return 0


def _bench_api_key(args: argparse.Namespace) -> str | None:
    """The API key from --api-key-file, else $LLMFLEET_API_KEY, else None. Raises ValueError."""
    if args.api_key_file:
        return read_secret(Path(args.api_key_file), "API key")
    return os.environ.get("LLMFLEET_API_KEY", "").strip() or None


#: --api-key-file, read by _bench_api_key (bench and load alike).
API_KEY_FILE = value(
    "--api-key-file",
    "PATH",
    "file holding the API key (default: $LLMFLEET_API_KEY; never printed)",
)


def json_option(what: str) -> Option:
    """--json PATH, written by write_json; what: the document it holds, e.g. "the results"."""
    return value("--json", "PATH", f"also write {what} as JSON to PATH")


def write_json(path: Path, document: object) -> None:
    """--json: the document, indented, written atomically."""
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode())


def print_and_write(text: str, document: object, json_path: str | None) -> None:
    """The text form on standard output, then with --json PATH the document written to PATH."""
    print(text)
    if json_path:
        write_json(Path(json_path), document)


def fail(command: str, problem: object, code: int) -> int:
    """Say what stopped `llmfleet COMMAND` on standard error; returns code, the exit status."""
    print(f"llmfleet {command}: {problem}", file=sys.stderr)
    return code


def cmd_bench(args: argparse.Namespace) -> int:
    from llmfleet.bench import (
        DEFAULT_CONCURRENCY,
        BenchConfig,
        BenchError,
        Level,
        all_failed_levels,
        format_report,
        parse_concurrency,
        parse_rates,
        run_benchmark,
    )
    from llmfleet.bench_compare import compare, format_comparison, load_bench
    from llmfleet.bench_stats import parse_objectives

    try:
        if args.prompt is not None:
            raise ValueError(
                "--prompt is gone: every request now gets its own generated prompt of "
                "--input-tokens tokens (one fixed prompt hits the server's prompt cache)"
            )
        if args.max_in_flight is not None and not args.rate:
            raise ValueError("--max-in-flight applies to --rate levels only")
        check_basic_auth_pair(args, "metrics")
        metrics_auth = None
        if args.metrics_password_file:
            password = read_secret(Path(args.metrics_password_file), "metrics password")
            metrics_auth = f"{args.metrics_user}:{password}"
        concurrency = parse_concurrency(args.concurrency) if args.concurrency else ()
        rates = parse_rates(args.rate) if args.rate else ()
        if not concurrency and not rates:
            concurrency = DEFAULT_CONCURRENCY
        levels = tuple(Level(concurrency=n) for n in concurrency) + tuple(
            Level(rate=rate, max_in_flight=args.max_in_flight) for rate in rates
        )
        baseline = load_bench(Path(args.baseline)) if args.baseline else None
        config = BenchConfig(
            endpoint=args.endpoint,
            levels=levels,
            requests=args.requests,
            input_tokens=args.input_tokens,
            output_tokens=args.max_tokens,
            seed=args.seed,
            objectives=parse_objectives(args.slo),
            metrics_url=args.metrics_url,
            read_metrics=not args.no_metrics,
            prompt_cache=args.prompt_cache,
            timeout_s=args.timeout,
            time_limit_s=args.time_limit,
            model=args.model,
            warmup=not args.no_warmup,
            api_key=_bench_api_key(args),
            metrics_auth=metrics_auth,
        )
    except ValueError as exc:
        return fail("bench", exc, 2)

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"bench: {line}", file=sys.stderr, flush=True)

    try:
        document = run_benchmark(config, progress=progress)
    except BenchError as exc:
        return fail("bench", exc, 1)
    print_and_write(format_report(document), document, args.json)
    if baseline is not None:
        print()
        print(format_comparison(compare(baseline, document, args.baseline, args.json)))
    failed = all_failed_levels(document)
    if failed:
        print(f"FAILED: every request failed at {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_receiver(args: argparse.Namespace) -> int:
    from llmfleet.rollback_receiver import ConfigError, load_config, serve

    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        print(
            f"the receiver configuration {exc.path} is not valid ({len(exc.problems)} problems):",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    if args.check:
        print(
            f"{args.config}: valid; would listen on {config.address}:{config.port}, "
            f"run {config.playbook} against {config.inventory}; at most "
            f"{config.max_connections} connections, headers within "
            f"{config.header_timeout_seconds:g} s, requests within "
            f"{config.request_timeout_seconds:g} s, bodies up to {config.max_body_bytes} bytes"
        )
        return 0
    try:
        return serve(config)
    except (OSError, ValueError) as exc:
        return fail("receiver", exc, 1)


#: The options of each subcommand, in the order of its --help (see `commands`).
RECEIVER_OPTIONS = (
    value("--config", "PATH", "the receiver's YAML configuration", required=True),
    switch("--check", "only validate the configuration, then exit"),
)

BUNDLE_BUILD_OPTIONS = (
    value("spec", None, "the bundle spec (YAML), e.g. bundles/ci.yml"),
    value(("--output", "-o"), "DIR", "the bundle folder", required=True),
    value(
        "--cache",
        "DIR",
        "download cache (default: DIR/.cache); keep it to make rebuilds incremental",
    ),
    value(
        "--signing-home",
        "PATH",
        "GnuPG home of the bundle key, outside DIR (default: $LLMFLEET_SIGNING_HOME, "
        "else ~/.local/share/llmfleet/signing)",
    ),
    value("--retries", None, "attempts per download (default: 3)", type=int, default=3),
    switch(("--quiet", "-q"), "no progress or log, only the summary"),
)

BUNDLE_VERIFY_OPTIONS = (
    value("bundle", "DIR", "the bundle folder"),
    value(
        "--fingerprint",
        "FPR",
        "also require the bundle key to be this one (its full fingerprint)",
    ),
    value(
        "--key-sha256",
        "HEX",
        "also require keys/llmfleet-bundle.gpg to have this sha256 (what inventories "
        "pin as llmfleet_bundle_key_sha256); a mismatch names both checksums",
    ),
)


def bench_options() -> tuple[Option, ...]:
    """bench's options: their defaults come from llmfleet.bench, read when the parser is built."""
    from llmfleet import bench

    concurrency = ",".join(str(n) for n in bench.DEFAULT_CONCURRENCY)
    return (
        value("endpoint", "ENDPOINT", "the server, e.g. http://10.0.0.5:8080"),
        value(
            "--concurrency",
            "N[,N...]",
            "closed-loop levels: requests always in flight, comma-separated (default: "
            f"{concurrency} unless --rate is given)",
        ),
        value(
            "--rate",
            "R[,R...]",
            "open-loop levels: requests per second, sent at seeded Poisson times",
        ),
        value(
            "--max-in-flight",
            "N",
            "at most N requests at once at a --rate level (default: no limit)",
            type=int,
        ),
        number("--requests", int, bench.DEFAULT_REQUESTS, "requests per level"),
        number("--input-tokens", int, bench.DEFAULT_INPUT_TOKENS, "tokens of each prompt, exact"),
        number(
            ("--output-tokens", "--max-tokens"),
            int,
            bench.DEFAULT_MAX_TOKENS,
            "tokens of each answer: max_tokens with ignore_eos",
            dest="max_tokens",
        ),
        number("--seed", int, bench.DEFAULT_SEED, "seed of the prompts and the arrival times"),
        value(
            "--slo",
            "NAME=VALUE",
            "a latency objective for goodput, repeatable: ttft, tpot or e2e, in ms or s "
            "(e.g. --slo ttft=500ms --slo tpot=50ms)",
            action="append",
            default=[],
        ),
        *basic_auth(
            "--metrics-url",
            "metrics",
            "the engine's Prometheus metrics (default: ENDPOINT/metrics; through the front "
            "door's metrics port: http://HOST:9180/engine/metrics)",
            "basic auth user for --metrics-url (the front door's metrics port asks for the "
            "metrics user); without it the API key goes to a metrics URL on the endpoint's host",
            "file holding --metrics-user's password",
        ),
        switch("--no-metrics", "do not read or check the server's metrics"),
        switch(
            "--prompt-cache",
            "let llama-server reuse cached prompt tokens (default: cache_prompt false, so a "
            "run with the same --seed as an earlier one does not find its prompts cached)",
        ),
        value("--prompt", None, argparse.SUPPRESS),  # gone: a message says why
        value("--model", "NAME", "the request's model field (optional)"),
        API_KEY_FILE,
        json_option("the results"),
        value(
            "--baseline",
            "PATH",
            "an earlier result (--json) to compare this run with, level by level: the ratio "
            "of output tokens/s and of TPOT (e.g. the same server without its draft model)",
        ),
        number(
            "--timeout",
            float,
            bench.DEFAULT_TIMEOUT_S,
            "seconds one request may take, stream included",
        ),
        number(
            "--time-limit",
            float,
            bench.DEFAULT_TIME_LIMIT_S,
            "seconds after which a level starts no more requests",
        ),
        switch("--no-warmup", "skip the warm-up request"),
        switch(("--quiet", "-q"), "no progress on stderr"),
    )


def cmd_bench_compare(args: argparse.Namespace) -> int:
    from llmfleet.bench_compare import compare, format_comparison, load_bench

    try:
        baseline, candidate = load_bench(Path(args.baseline)), load_bench(Path(args.candidate))
    except ValueError as exc:
        return fail("bench-compare", exc, 2)
    document = compare(baseline, candidate, args.baseline, args.candidate)
    print_and_write(format_comparison(document), document, args.json)
    return 0


BENCH_COMPARE_OPTIONS = (
    value("baseline", "BASELINE", "the result compared against"),
    value("candidate", "CANDIDATE", "the result measured against it"),
    json_option("the comparison"),
)


def cmd_load(args: argparse.Namespace) -> int:
    from llmfleet.loadgen import LoadConfig, format_summary, run_load

    try:
        config = LoadConfig(
            endpoints=tuple(args.endpoints),
            concurrency=args.concurrency,
            max_requests=args.max_requests,
            duration_s=args.duration,
            max_tokens=args.max_tokens,
            timeout_s=args.timeout,
            stop_file=Path(args.stop_file) if args.stop_file else None,
            api_key=_bench_api_key(args),
        )
        report = run_load(config)
    except ValueError as exc:
        return fail("load", exc, 2)
    print_and_write(format_summary(report), report, args.json)
    return 1 if report["failed"] else 0


LOAD_OPTIONS = (
    value("endpoints", "ENDPOINT", "e.g. http://10.0.0.5:8080", nargs="+"),
    number("--concurrency", int, 1, "workers per endpoint", show_default=False),
    number("--max-requests", int, 1000, "in all", show_default=False),
    number("--duration", float, 600.0, "seconds at most", show_default=False),
    number("--max-tokens", int, 8, "per request", show_default=False),
    number("--timeout", float, 60.0, "per request", show_default=False),
    value("--stop-file", "PATH", "stop once this file exists"),
    API_KEY_FILE,
    json_option("the report"),
)


@dataclass(frozen=True)
class Command:
    """A subcommand: its line in `llmfleet --help`, the description of its own --help, its
    options, and what runs it, or the subcommands it has instead (one of them required)."""

    name: str
    help: str
    description: str | None = None
    options: tuple[Option, ...] = ()
    run: Callable[[argparse.Namespace], int] | None = None
    subcommands: tuple[Command, ...] = ()


def commands() -> tuple[Command, ...]:
    """Every subcommand of `llmfleet`, in the order its --help lists them."""
    from llmfleet import bench_stats, rollback_receiver

    return (
        Command(
            "report",
            help="print the hardware report and tier of every host in the fact cache",
            description="The table of every host in the fact cache: tier, GPUs, VRAM, memory "
            "bandwidth, decode tokens/s, the active model; with the hardware evaluations, bench "
            "results and, when given, Prometheus. --html writes it as one page that opens "
            "offline, --json as data.",
            options=REPORT_OPTIONS,
            run=cmd_report,
        ),
        Command(
            "bundle",
            help="build or verify the offline bundle (apt repos, files, models, wheels)",
            subcommands=(
                Command(
                    "build",
                    help="gather a spec's packages, files and wheels into a signed bundle "
                    "(incremental)",
                    description="Resolve apt closures in containers of the target images, "
                    "download files with their sha256, resolve wheel sets with pip (wheels "
                    "only, for the hosts' Python) with a requirements.lock of exact pins and "
                    "hashes each, and write a signed, checksummed bundle into DIR.",
                    options=BUNDLE_BUILD_OPTIONS,
                    run=cmd_bundle_build,
                ),
                Command(
                    "verify",
                    help="recompute every checksum and signature of a bundle",
                    description="Exit 0 with a one-line summary when the bundle is sound; "
                    "otherwise list each bad artifact (path, expected and actual sha256, "
                    "missing, or bad signature).",
                    options=BUNDLE_VERIFY_OPTIONS,
                    run=cmd_bundle_verify,
                ),
            ),
        ),
        Command(
            "bench",
            help="measure an OpenAI-compatible endpoint: TTFT, TPOT, ITL, latency, goodput",
            description="Send a warm-up request, then --requests streaming chat completions "
            "per level: at each --concurrency (closed loop) and each --rate (Poisson arrivals, "
            "open loop). Every prompt is distinct and exactly --input-tokens long (by the "
            "server's /tokenize); every answer is --output-tokens long (ignore_eos). Prints "
            "TTFT, TPOT, ITL and end-to-end latency (mean, p50, p90, p99), throughput and "
            "goodput per level, and checks the token counts against the server's /metrics "
            f"counters. Percentiles use {bench_stats.PERCENTILE_METHOD}; "
            f"{bench_stats.SAMPLE_RULE} (p99: 100). Exit 1 when every request of a level failed.",
            options=bench_options(),
            run=cmd_bench,
        ),
        Command(
            "bench-compare",
            help="two bench results side by side: the speedup of one server over another",
            description="Match the levels of two `llmfleet bench --json` results by name and "
            "print, per level, each side's output tokens/s and TPOT (p50) with their ratios, "
            "candidate over baseline (tokens/s above 1 and TPOT below 1 are faster), and the "
            "acceptance rate of speculative decoding where a side has a draft model. Settings "
            "of the workload that differ are named first.",
            options=BENCH_COMPARE_OPTIONS,
            run=cmd_bench_compare,
        ),
        Command(
            "load",
            help="send steady completions across endpoints, as a balancer would, and count "
            "failures",
            description="Each endpoint gets --concurrency workers; a worker sends a chat "
            "completion whenever the endpoint's /health answers 200, and none while it does "
            "not. Stops after --duration seconds, --max-requests requests, or when --stop-file "
            "exists. Exit 1 when any request failed.",
            options=LOAD_OPTIONS,
            run=cmd_load,
        ),
        Command(
            "receiver",
            help="serve Alertmanager's webhook and roll back the host of each firing rollback "
            "alert",
            description="Listen for Alertmanager webhook payloads on POST "
            f"{rollback_receiver.WEBHOOK_PATH} (Authorization: Bearer, from token_file). For "
            "each firing alert labelled action=rollback, run the rollback playbook with --limit "
            "set to the alert's instance (its :port removed), one run at a time and at most "
            "once per host per cooldown_seconds; an alert naming a pattern, a group or a host "
            "the inventory lacks is answered 422 before anything is recorded. Connections, "
            "bodies and their time are bounded (limits: in the configuration). GET /metrics "
            "exports the counters (Bearer: the metrics_token_file's or the webhook's token), "
            "GET /health answers 200 to anyone.",
            options=RECEIVER_OPTIONS,
            run=cmd_receiver,
        ),
    )


def add_commands(
    parser: argparse.ArgumentParser, dest: str, subcommands: tuple[Command, ...]
) -> None:
    """The subcommands under parser, one of them required; its name goes to dest, and a
    subcommand's own subcommands to "<its name>_command" (`llmfleet bundle`: bundle_command)."""
    actions = parser.add_subparsers(dest=dest, required=True)
    for command in subcommands:
        sub = actions.add_parser(command.name, help=command.help, description=command.description)
        add_options(sub, *command.options)
        if command.subcommands:
            add_commands(sub, f"{command.name}_command", command.subcommands)
        if command.run is not None:
            sub.set_defaults(func=command.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmfleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llmfleet {__version__}")
    add_commands(parser, "command", commands())
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
