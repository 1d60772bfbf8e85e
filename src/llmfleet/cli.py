"""`llmfleet`: the command line next to the playbooks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmfleet import __version__
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
