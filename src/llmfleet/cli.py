"""`llmfleet`: the command line next to the playbooks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llmfleet import __version__
from llmfleet.fileio import read_secret, write_atomic
from llmfleet.report import format_table, load_fact_cache, report_rows


def cmd_report(args: argparse.Namespace) -> int:
    hosts = load_fact_cache(Path(args.facts))
    if not hosts:
        print(
            f"no host with llmfleet facts in {args.facts}: run the preflight first", file=sys.stderr
        )
        return 1
    print(format_table(report_rows(hosts)))
    return 0


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
    except KeyboardInterrupt:
        print("bundle build interrupted: nothing partial is left under the bundle", file=sys.stderr)
        return 130
    print("\n".join(result.summary()))
    return 0


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from llmfleet.bundle.signing import SigningError
    from llmfleet.bundle.verify import verify_bundle

    bundle = Path(args.bundle)
    if not bundle.is_dir():
        print(f"{bundle} is not a folder", file=sys.stderr)
        return 2
    try:
        problems, summary = verify_bundle(bundle, fingerprint=args.fingerprint)
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


def add_api_key_file_argument(parser: argparse.ArgumentParser) -> None:
    """--api-key-file, read by _bench_api_key (bench and load alike)."""
    parser.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="file holding the API key (default: $LLMFLEET_API_KEY; never printed)",
    )


def write_json(path: Path, document: object) -> None:
    """--json: the document, indented, written atomically."""
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode())


def cmd_bench(args: argparse.Namespace) -> int:
    from llmfleet.bench import (
        BenchConfig,
        all_failed_levels,
        chat_url,
        format_report,
        parse_concurrency,
        run_benchmark,
    )

    try:
        chat_url(args.endpoint)
        concurrency = parse_concurrency(args.concurrency)
        api_key = _bench_api_key(args)
        for name in ("requests", "max_tokens"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be 1 or more")
        if args.timeout <= 0 or args.time_limit <= 0:
            raise ValueError("--timeout and --time-limit must be more than 0 seconds")
    except ValueError as exc:
        print(f"llmfleet bench: {exc}", file=sys.stderr)
        return 2
    config = BenchConfig(
        endpoint=args.endpoint,
        concurrency=concurrency,
        requests=args.requests,
        max_tokens=args.max_tokens,
        prompt=args.prompt,
        timeout_s=args.timeout,
        time_limit_s=args.time_limit,
        model=args.model,
        warmup=not args.no_warmup,
        api_key=api_key,
    )

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"bench: {line}", file=sys.stderr, flush=True)

    document = run_benchmark(config, progress=progress)
    print(format_report(document))
    if args.json:
        write_json(Path(args.json), document)
    failed = all_failed_levels(document)
    if failed:
        levels = ", ".join(str(level) for level in failed)
        print(f"FAILED: every request failed at concurrency {levels}", file=sys.stderr)
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
            f"run {config.playbook} against {config.inventory}"
        )
        return 0
    try:
        return serve(config)
    except (OSError, ValueError) as exc:
        print(f"llmfleet receiver: {exc}", file=sys.stderr)
        return 1


def add_receiver_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from llmfleet import rollback_receiver

    parser = commands.add_parser(
        "receiver",
        help="serve Alertmanager's webhook and roll back the host of each firing rollback alert",
        description="Listen for Alertmanager webhook payloads on POST "
        f"{rollback_receiver.WEBHOOK_PATH} (Authorization: Bearer, from token_file). For each "
        "firing alert labelled action=rollback, run the rollback playbook with --limit set to "
        "the alert's instance (its :port removed), one run at a time and at most once per host "
        "per cooldown_seconds. GET /metrics exports the counters, GET /health answers 200.",
    )
    parser.add_argument(
        "--config", required=True, metavar="PATH", help="the receiver's YAML configuration"
    )
    parser.add_argument(
        "--check", action="store_true", help="only validate the configuration, then exit"
    )
    parser.set_defaults(func=cmd_receiver)


def add_bundle_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bundle = commands.add_parser(
        "bundle", help="build or verify the offline bundle (apt repos, files, models)"
    )
    actions = bundle.add_subparsers(dest="bundle_command", required=True)
    build = actions.add_parser(
        "build",
        help="gather a spec's packages and files into a signed bundle (incremental)",
        description="Resolve apt closures in containers of the target images, download files "
        "with their sha256, and write a signed, checksummed bundle into DIR.",
    )
    build.add_argument("spec", help="the bundle spec (YAML), e.g. bundles/ci.yml")
    build.add_argument("--output", "-o", required=True, metavar="DIR", help="the bundle folder")
    build.add_argument(
        "--cache",
        metavar="DIR",
        help="download cache (default: DIR/.cache); keep it to make rebuilds incremental",
    )
    build.add_argument(
        "--signing-home",
        metavar="PATH",
        help="GnuPG home of the bundle key, outside DIR (default: $LLMFLEET_SIGNING_HOME, "
        "else ~/.local/share/llmfleet/signing)",
    )
    build.add_argument("--retries", type=int, default=3, help="attempts per download (default: 3)")
    build.add_argument(
        "--quiet", "-q", action="store_true", help="no progress or log, only the summary"
    )
    build.set_defaults(func=cmd_bundle_build)
    verify = actions.add_parser(
        "verify",
        help="recompute every checksum and signature of a bundle",
        description="Exit 0 with a one-line summary when the bundle is sound; otherwise list "
        "each bad artifact (path, expected and actual sha256, missing, or bad signature).",
    )
    verify.add_argument("bundle", metavar="DIR", help="the bundle folder")
    verify.add_argument(
        "--fingerprint",
        metavar="FPR",
        help="also require the bundle key to be this one (its full fingerprint)",
    )
    verify.set_defaults(func=cmd_bundle_verify)


def add_number_arguments(
    parser: argparse.ArgumentParser, *options: tuple[str, type[int] | type[float], float, str]
) -> None:
    """Options that take one number: (flag, int or float, default, help); the help shows the
    default, and the metavar says the kind (N for a count, S for seconds)."""
    for flag, kind, default, text in options:
        parser.add_argument(
            flag,
            type=kind,
            default=default,
            metavar="N" if kind is int else "S",
            help=f"{text} (default: %(default)g)",
        )


def add_bench_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from llmfleet import bench

    parser = commands.add_parser(
        "bench",
        help="measure an OpenAI-compatible endpoint: latency, time to first token, tokens/s",
        description="Send a warm-up request, then up to --requests streaming chat completions "
        "at each concurrency level (none started after --time-limit), and print p50/p99 "
        "latency and time to first token, tokens/s and requests/s per level. Percentiles "
        f"use {bench.PERCENTILE_METHOD}. Exit 1 when every request of a level failed.",
    )
    parser.add_argument(
        "endpoint", metavar="ENDPOINT", help="the server, e.g. http://10.0.0.5:8080"
    )
    parser.add_argument(
        "--concurrency",
        default=",".join(str(level) for level in bench.DEFAULT_CONCURRENCY),
        metavar="N[,N...]",
        help="concurrency levels, comma-separated (default: %(default)s)",
    )
    add_number_arguments(
        parser,
        ("--requests", int, bench.DEFAULT_REQUESTS, "requests per level"),
        ("--max-tokens", int, bench.DEFAULT_MAX_TOKENS, "max_tokens of each request"),
    )
    parser.add_argument(
        "--prompt", default=bench.DEFAULT_PROMPT, metavar="TEXT", help="the user message"
    )
    parser.add_argument("--model", metavar="NAME", help="the request's model field (optional)")
    add_api_key_file_argument(parser)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    add_number_arguments(
        parser,
        (
            "--timeout",
            float,
            bench.DEFAULT_TIMEOUT_S,
            "seconds one request may take, stream included",
        ),
        (
            "--time-limit",
            float,
            bench.DEFAULT_TIME_LIMIT_S,
            "seconds after which a level starts no more requests",
        ),
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up request")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=cmd_bench)


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
        print(f"llmfleet load: {exc}", file=sys.stderr)
        return 2
    print(format_summary(report))
    if args.json:
        write_json(Path(args.json), report)
    return 1 if report["failed"] else 0


def add_load_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "load",
        help="send steady completions across endpoints, as a balancer would, and count failures",
        description="Each endpoint gets --concurrency workers; a worker sends a chat "
        "completion whenever the endpoint's /health answers 200, and none while it does not. "
        "Stops after --duration seconds, --max-requests requests, or when --stop-file exists. "
        "Exit 1 when any request failed.",
    )
    parser.add_argument(
        "endpoints", nargs="+", metavar="ENDPOINT", help="e.g. http://10.0.0.5:8080"
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, metavar="N", help="workers per endpoint"
    )
    parser.add_argument("--max-requests", type=int, default=1000, metavar="N", help="in all")
    parser.add_argument(
        "--duration", type=float, default=600.0, metavar="S", help="seconds at most"
    )
    parser.add_argument("--max-tokens", type=int, default=8, metavar="N", help="per request")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per request")
    parser.add_argument("--stop-file", metavar="PATH", help="stop once this file exists")
    add_api_key_file_argument(parser)
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    parser.set_defaults(func=cmd_load)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmfleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llmfleet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser(
        "report", help="print the hardware report and tier of every host in the fact cache"
    )
    report.add_argument(
        "--facts", default=".cache/facts", help="the jsonfile fact cache (default: .cache/facts)"
    )
    report.set_defaults(func=cmd_report)
    add_bundle_parser(commands)
    add_bench_parser(commands)
    add_load_parser(commands)
    add_receiver_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
