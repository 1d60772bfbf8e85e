"""The roles' interface, checked before anything changes: numbers in range, and variables
that carry a role's prefix but that no role declares (a misspelling Ansible would ignore).

Pure functions; the llmfleet role's tasks call them on every host (tests in
tests/unit/test_interface_filters.py).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

# set_fact outputs cached between runs (cacheable: true) that a host may carry before any
# role runs; they are results, not inputs, so no argument spec declares them.
CACHED_OUTPUTS = frozenset({"preflight_tier", "preflight_tier_source"})


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def range_problems(values: Mapping[str, Any], ranges: Mapping[str, Iterable[float]]) -> list[str]:
    """One message per variable whose value (set, not None) is not a number in its range."""
    problems = []
    for name, bounds in ranges.items():
        value = values.get(name)
        if value is None or value == "":
            continue
        low, high = (float(bound) for bound in bounds)
        number = _number(value)
        shown = f"{low:g} to {high:g}"
        if number is None or not math.isfinite(number):
            problems.append(f"{name} is {value!r}; allowed: a number from {shown}")
        elif not low <= number <= high:
            problems.append(f"{name} is {value!r}; allowed: {shown}")
    return problems


def color_problems(colors: Any) -> list[str]:
    """llmfleet_engine_colors: two colors, each with a port from 1 to 65535, two ports."""
    if not isinstance(colors, Mapping) or len(colors) != 2:
        return [f"llmfleet_engine_colors needs exactly two colors, got {colors!r}"]
    problems = []
    ports = []
    for name, entry in colors.items():
        port = entry.get("port") if isinstance(entry, Mapping) else None
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            problems.append(
                f"llmfleet_engine_colors.{name}.port is {port!r}; allowed: a port from 1 to 65535"
            )
        ports.append(port)
    if not problems and len(set(ports)) != 2:
        problems.append(f"llmfleet_engine_colors needs two different ports, got {ports}")
    return problems


def role_specs(roles_dir: str) -> dict[str, Any]:
    """Each role's meta/argument_specs.yml under roles_dir, by role name (read on the control
    node, where filters run); a role without one is left out."""
    return {
        path.parent.parent.name: yaml.safe_load(path.read_text()) or {}
        for path in sorted(Path(roles_dir).glob("*/meta/argument_specs.yml"))
    }


def declared_options(specs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every option any entry point of any role's argument_specs declares, sorted."""
    names: set[str] = set()
    for spec in specs:
        for entry in ((spec or {}).get("argument_specs") or {}).values():
            names.update((entry or {}).get("options") or {})
    return sorted(names)


def _role_of(name: str, prefixes: list[str]) -> str | None:
    """The role whose prefix the name carries, or nearly carries (one letter off)."""
    for prefix in prefixes:
        if name.startswith(f"{prefix}_"):
            return prefix
    for prefix in prefixes:
        head = name[: len(prefix) + 1]
        if len(prefix) >= 6 and difflib.SequenceMatcher(None, head, f"{prefix}_").ratio() >= 0.9:
            return prefix
    return None


def undeclared_variables(
    names: Iterable[str],
    prefixes: Iterable[str],
    declared: Iterable[str],
    facts: Iterable[str] = (),
) -> list[str]:
    """Names that carry a role's prefix (`<role>_`, or one letter off it) that no role declares.

    Each comes with the declared name it most resembles, when one is close. Facts (gathered,
    or cached from an earlier run) and the cached outputs of set_fact are results, not inputs,
    and are left out; so are internal names (`__x`).
    """
    roles = sorted(set(prefixes), key=len, reverse=True)
    known = set(declared) | set(facts) | CACHED_OUTPUTS
    found = []
    for name in sorted(n for n in names if isinstance(n, str)):
        if name in known or name.startswith("_") or _role_of(name, roles) is None:
            continue
        close = difflib.get_close_matches(name, sorted(declared), n=1, cutoff=0.9)
        found.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return found


class FilterModule:
    """llmfleet interface filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "llmfleet_range_problems": range_problems,
            "llmfleet_color_problems": color_problems,
            "llmfleet_role_specs": role_specs,
            "llmfleet_declared_options": declared_options,
            "llmfleet_undeclared_variables": undeclared_variables,
        }
