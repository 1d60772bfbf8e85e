"""`llmfleet report`: its options and what it does with them (`llmfleet.cli` registers it).

By default the text table of every host in the fact cache, as it has always been, with
the new columns at its right. ``--html FILE`` also writes the page (one file that opens
offline), ``--json FILE`` the data both are drawn from (``--json -``: on standard output,
instead of the table). ``--prometheus URL`` adds what is live: firing alerts, VRAM used
and free, whether each engine answers; a Prometheus that does not answer is said so on
standard error and in the report, which goes on without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from llmfleet.cli_options import Option, basic_auth, check_basic_auth_pair, number, value
from llmfleet.fileio import read_secret, write_atomic
from llmfleet.report import SCHEMAS, format_report, load_documents, load_fact_cache
from llmfleet.report_data import BENCH_SCHEMA, EVALUATION_SCHEMA, build_report
from llmfleet.report_prometheus import DEFAULT_TIMEOUT_S, check_url, fetch

EVALUATION_SCHEMA_FILE = SCHEMAS / "hwevaluation-1.json"
BENCH_SCHEMA_FILE = SCHEMAS / "bench-2.schema.json"


def _folder(flag: str, default: str, text: str) -> Option:
    """A folder the report reads, and the one it reads without the option."""
    return value(flag, "DIR", f"{text} (default: {default})", default=default)


#: `llmfleet report`'s options, in the order of its --help.
REPORT_OPTIONS = (
    _folder("--facts", ".cache/facts", "the jsonfile fact cache"),
    _folder("--evaluations", ".cache/evaluation", "hardware evaluations, <host>.json"),
    _folder("--bench", ".cache/bench", "llmfleet bench --json results, <host>.json"),
    *basic_auth(
        "--prometheus",
        "prometheus",
        "Prometheus' base URL (e.g. http://mon-01:9090): firing alerts, VRAM used and "
        "free, answering engines; read-only queries",
        "Prometheus' basic auth user (the metrics user)",
        "file holding that user's password (never printed)",
    ),
    number("--prometheus-timeout", float, DEFAULT_TIMEOUT_S, "seconds each query may take"),
    value("--html", "FILE", "also write the report as one self-contained page"),
    value(
        "--json",
        "FILE",
        "also write the report's data as JSON to FILE ('-': to standard output, "
        "instead of the table)",
    ),
)


def _prometheus_settings(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    """(URL, user, password), checked; ValueError with a message naming the option."""
    if args.prometheus is None:
        if args.prometheus_user or args.prometheus_password_file:
            raise ValueError("--prometheus-user and --prometheus-password-file need --prometheus")
        return None, None, None
    url = check_url(args.prometheus)
    check_basic_auth_pair(args, "prometheus")
    if args.prometheus_timeout <= 0:
        raise ValueError(f"--prometheus-timeout must be more than 0, not {args.prometheus_timeout}")
    password = None
    if args.prometheus_password_file:
        password = read_secret(Path(args.prometheus_password_file), "Prometheus password")
    return url, args.prometheus_user, password


def run_report(args: argparse.Namespace) -> int:
    try:
        url, user, password = _prometheus_settings(args)
    except ValueError as exc:
        print(f"llmfleet report: {exc}", file=sys.stderr)
        return 2
    facts = load_fact_cache(Path(args.facts))
    if not facts:
        print(
            f"no host with llmfleet facts in {args.facts}: run the preflight first", file=sys.stderr
        )
        return 1
    evaluations, evaluation_problems = load_documents(
        Path(args.evaluations), EVALUATION_SCHEMA, EVALUATION_SCHEMA_FILE
    )
    benches, bench_problems = load_documents(Path(args.bench), BENCH_SCHEMA, BENCH_SCHEMA_FILE)
    snapshot = None
    if url is not None:
        snapshot = fetch(url, user=user, password=password, timeout=args.prometheus_timeout)
        if snapshot["error"]:
            print(
                f"llmfleet report: {snapshot['error']}; the report goes on without live figures",
                file=sys.stderr,
            )
    report = build_report(
        facts,
        evaluations,
        benches,
        snapshot,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        inputs={"facts": args.facts, "evaluations": args.evaluations, "bench": args.bench},
        problems=[*evaluation_problems, *bench_problems],
    )
    document = json.dumps(report, indent=2) + "\n"
    if args.json == "-":
        sys.stdout.write(document)
    else:
        print(format_report(report))
    written = []
    if args.json and args.json != "-":
        written.append((Path(args.json), document.encode()))
    if args.html:
        from llmfleet.report_html import render_html

        written.append((Path(args.html), render_html(report).encode()))
    for path, data in written:
        try:
            write_atomic(path, data)
        except OSError as exc:
            print(f"llmfleet report: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"llmfleet report: wrote {path} ({len(report['hosts'])} hosts)", file=sys.stderr)
    return 0
