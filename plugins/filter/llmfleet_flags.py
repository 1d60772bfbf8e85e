"""Command-line flags of the Prometheus tools, rendered from data and checked without a shell.

The node exporter, Prometheus and Alertmanager read their flags from an
/etc/default file that systemd loads (EnvironmentFile, `$ARGS`): systemd
splits `$ARGS` on white space and runs no shell, so each argument must be one
word with nothing systemd's parser or a reader would treat specially. The roles
ask each tool to parse the arguments (`<tool> <args> --help`, run with an argv,
never through a shell) before they write the file. Tests: tests/unit/test_flag_filters.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# One word for systemd's EnvironmentFile and $ARGS splitting: no white space, no quotes,
# no backslash, no $ or backtick, no control characters.
_UNSAFE = re.compile(r"[\s\"'\\$`\x00-\x1f\x7f]")


def flag_argument(name: str, value: Any) -> str:
    """`--name=value`; a boolean is the switch `--name` or `--no-name`."""
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{name}"
    return f"--{name}={value}"


def flag_arguments(flags: Mapping[str, Any]) -> list[str]:
    """Every flag of the mapping as one argument, in the mapping's order."""
    return [flag_argument(str(name), value) for name, value in flags.items()]


def unsafe_arguments(arguments: Iterable[str], allow_empty_values: bool = False) -> list[str]:
    """The arguments that are not one plain word (white space, quotes, $, ...), and, unless
    allowed, the ones with an empty value (`--flag=`)."""
    return [
        arg
        for arg in arguments
        if not isinstance(arg, str)
        or not arg
        or (arg.endswith("=") and not allow_empty_values)
        or _UNSAFE.search(arg)
    ]


class FilterModule:
    """llmfleet flag filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "llmfleet_flag_arguments": flag_arguments,
            "llmfleet_unsafe_arguments": unsafe_arguments,
        }
