"""`llmfleet`: the command line next to the playbooks."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from llmfleet import __version__
from llmfleet.fileio import read_secret, write_atomic
from llmfleet.report_cli import add_report_arguments, run_report


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
    for flag, value, pattern in (
        ("--key-sha256", args.key_sha256, KEY_SHA256_RE),
        ("--fingerprint", args.fingerprint, FINGERPRINT_RE),
    ):
        if value is not None and not pattern.fullmatch(value.strip()):
            print(f"bundle verify: {flag} {value!r} is not {PIN_FORMS[flag]}", file=sys.stderr)
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
        if bool(args.metrics_user) != bool(args.metrics_password_file):
            raise ValueError("give --metrics-user and --metrics-password-file together")
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
        print(f"llmfleet bench: {exc}", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"bench: {line}", file=sys.stderr, flush=True)

    try:
        document = run_benchmark(config, progress=progress)
    except BenchError as exc:
        print(f"llmfleet bench: {exc}", file=sys.stderr)
        return 1
    print(format_report(document))
    if args.json:
        write_json(Path(args.json), document)
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
        "per cooldown_seconds; an alert naming a pattern, a group or a host the inventory lacks "
        "is answered 422 before anything is recorded. Connections, bodies and their time are "
        "bounded (limits: in the configuration). GET /metrics exports the counters (Bearer: the "
        "metrics_token_file's or the webhook's token), GET /health answers 200 to anyone.",
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
        "bundle", help="build or verify the offline bundle (apt repos, files, models, wheels)"
    )
    actions = bundle.add_subparsers(dest="bundle_command", required=True)
    build = actions.add_parser(
        "build",
        help="gather a spec's packages, files and wheels into a signed bundle (incremental)",
        description="Resolve apt closures in containers of the target images, download files "
        "with their sha256, resolve wheel sets with pip (wheels only, for the hosts' Python) "
        "with a requirements.lock of exact pins and hashes each, and write a signed, "
        "checksummed bundle into DIR.",
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
    verify.add_argument(
        "--key-sha256",
        metavar="HEX",
        help="also require keys/llmfleet-bundle.gpg to have this sha256 (what inventories "
        "pin as llmfleet_bundle_key_sha256); a mismatch names both checksums",
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
    from llmfleet import bench, bench_stats

    parser = commands.add_parser(
        "bench",
        help="measure an OpenAI-compatible endpoint: TTFT, TPOT, ITL, latency, goodput",
        description="Send a warm-up request, then --requests streaming chat completions per "
        "level: at each --concurrency (closed loop) and each --rate (Poisson arrivals, open "
        "loop). Every prompt is distinct and exactly --input-tokens long (by the server's "
        "/tokenize); every answer is --output-tokens long (ignore_eos). Prints TTFT, TPOT, ITL "
        "and end-to-end latency (mean, p50, p90, p99), throughput and goodput per level, and "
        "checks the token counts against the server's /metrics counters. Percentiles use "
        f"{bench_stats.PERCENTILE_METHOD}; {bench_stats.SAMPLE_RULE} (p99: 100). "
        "Exit 1 when every request of a level failed.",
    )
    parser.add_argument(
        "endpoint", metavar="ENDPOINT", help="the server, e.g. http://10.0.0.5:8080"
    )
    parser.add_argument(
        "--concurrency",
        metavar="N[,N...]",
        help="closed-loop levels: requests always in flight, comma-separated (default: "
        f"{','.join(str(n) for n in bench.DEFAULT_CONCURRENCY)} unless --rate is given)",
    )
    parser.add_argument(
        "--rate",
        metavar="R[,R...]",
        help="open-loop levels: requests per second, sent at seeded Poisson times",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        metavar="N",
        help="at most N requests at once at a --rate level (default: no limit)",
    )
    add_number_arguments(
        parser,
        ("--requests", int, bench.DEFAULT_REQUESTS, "requests per level"),
        ("--input-tokens", int, bench.DEFAULT_INPUT_TOKENS, "tokens of each prompt, exact"),
    )
    parser.add_argument(
        "--output-tokens",
        "--max-tokens",
        dest="max_tokens",
        type=int,
        default=bench.DEFAULT_MAX_TOKENS,
        metavar="N",
        help="tokens of each answer: max_tokens with ignore_eos (default: %(default)g)",
    )
    add_number_arguments(
        parser, ("--seed", int, bench.DEFAULT_SEED, "seed of the prompts and the arrival times")
    )
    parser.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a latency objective for goodput, repeatable: ttft, tpot or e2e, in ms or s "
        "(e.g. --slo ttft=500ms --slo tpot=50ms)",
    )
    parser.add_argument(
        "--metrics-url",
        metavar="URL",
        help="the engine's Prometheus metrics (default: ENDPOINT/metrics; through the front "
        "door's metrics port: http://HOST:9180/engine/metrics)",
    )
    parser.add_argument(
        "--metrics-user",
        metavar="USER",
        help="basic auth user for --metrics-url (the front door's metrics port asks for the "
        "metrics user); without it the API key goes to a metrics URL on the endpoint's host",
    )
    parser.add_argument(
        "--metrics-password-file", metavar="PATH", help="file holding --metrics-user's password"
    )
    parser.add_argument(
        "--no-metrics", action="store_true", help="do not read or check the server's metrics"
    )
    parser.add_argument(
        "--prompt-cache",
        action="store_true",
        help="let llama-server reuse cached prompt tokens (default: cache_prompt false, so a "
        "run with the same --seed as an earlier one does not find its prompts cached)",
    )
    parser.add_argument("--prompt", help=argparse.SUPPRESS)  # gone: a message says why
    parser.add_argument("--model", metavar="NAME", help="the request's model field (optional)")
    add_api_key_file_argument(parser)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--baseline",
        metavar="PATH",
        help="an earlier result (--json) to compare this run with, level by level: the ratio "
        "of output tokens/s and of TPOT (e.g. the same server without its draft model)",
    )
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


def cmd_bench_compare(args: argparse.Namespace) -> int:
    from llmfleet.bench_compare import compare, format_comparison, load_bench

    try:
        baseline, candidate = load_bench(Path(args.baseline)), load_bench(Path(args.candidate))
    except ValueError as exc:
        print(f"llmfleet bench-compare: {exc}", file=sys.stderr)
        return 2
    document = compare(baseline, candidate, args.baseline, args.candidate)
    print(format_comparison(document))
    if args.json:
        write_json(Path(args.json), document)
    return 0


def add_bench_compare_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "bench-compare",
        help="two bench results side by side: the speedup of one server over another",
        description="Match the levels of two `llmfleet bench --json` results by name and "
        "print, per level, each side's output tokens/s and TPOT (p50) with their ratios, "
        "candidate over baseline (tokens/s above 1 and TPOT below 1 are faster), and the "
        "acceptance rate of speculative decoding where a side has a draft model. Settings of "
        "the workload that differ are named first.",
    )
    parser.add_argument("baseline", metavar="BASELINE", help="the result compared against")
    parser.add_argument("candidate", metavar="CANDIDATE", help="the result measured against it")
    parser.add_argument("--json", metavar="PATH", help="also write the comparison as JSON to PATH")
    parser.set_defaults(func=cmd_bench_compare)


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
        "report",
        help="print the hardware report and tier of every host in the fact cache",
        description="The table of every host in the fact cache: tier, GPUs, VRAM, memory "
        "bandwidth, decode tokens/s, the active model; with the hardware evaluations, bench "
        "results and, when given, Prometheus. --html writes it as one page that opens "
        "offline, --json as data.",
    )
    add_report_arguments(report)
    report.set_defaults(func=cmd_report)
    add_bundle_parser(commands)
    add_bench_parser(commands)
    add_bench_compare_parser(commands)
    add_load_parser(commands)
    add_receiver_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
