"""Tables of options, from which `llmfleet.cli` and `llmfleet.report_cli` build their parsers.

A row (`value`, `switch`, `number`, the three rows of `basic_auth`) says one option, and
`add_options` declares a table's rows in order, the order --help lists them in.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: One flag ("--json"), a flag and its aliases (("--quiet", "-q")), or a positional's name.
Flags = str | tuple[str, ...]


@dataclass(frozen=True)
class Option:
    """A row of a table: argparse's add_argument(*flags, **settings)."""

    flags: tuple[str, ...]
    settings: Mapping[str, Any]


def _names(flags: Flags) -> tuple[str, ...]:
    return (flags,) if isinstance(flags, str) else flags


def value(flags: Flags, metavar: str | None, text: str, **settings: Any) -> Option:
    """An option that takes a value, or a positional argument, shown as metavar (None:
    argparse's own); settings: add_argument's others (type, default, required, nargs...)."""
    return Option(_names(flags), {"metavar": metavar, "help": text, **settings})


def switch(flags: Flags, text: str) -> Option:
    """An option that takes no value: true when given."""
    return Option(_names(flags), {"action": "store_true", "help": text})


def number(
    flags: Flags,
    kind: type[int] | type[float],
    default: float,
    text: str,
    *,
    show_default: bool = True,
    **settings: Any,
) -> Option:
    """An option that takes one number, int or float: the metavar says the kind (N for a
    count, S for seconds), and the help shows the default unless show_default is false."""
    shown = f"{text} (default: %(default)g)" if show_default else text
    metavar = "N" if kind is int else "S"
    return value(flags, metavar, shown, type=kind, default=default, **settings)


def basic_auth(url_flag: str, prefix: str, *helps: str) -> tuple[Option, ...]:
    """An HTTP server behind basic auth: URL_FLAG URL, --PREFIX-user USER and
    --PREFIX-password-file PATH (the password is read from a file, never given on the command
    line); helps: these three options' help texts, in that order. check_basic_auth_pair checks
    that the last two come together."""
    flags = (url_flag, f"--{prefix}-user", f"--{prefix}-password-file")
    rows = zip(flags, ("URL", "USER", "PATH"), helps, strict=True)
    return tuple(value(flag, metavar, text) for flag, metavar, text in rows)


def check_basic_auth_pair(args: argparse.Namespace, prefix: str) -> None:
    """ValueError unless --PREFIX-user and --PREFIX-password-file are both given or neither."""
    user, password_file = (getattr(args, f"{prefix}_{name}") for name in ("user", "password_file"))
    if bool(user) != bool(password_file):
        raise ValueError(f"give --{prefix}-user and --{prefix}-password-file together")


def add_options(parser: argparse.ArgumentParser, *options: Option) -> None:
    """Declare each row of a table on parser, in order."""
    for option in options:
        parser.add_argument(*option.flags, **option.settings)
