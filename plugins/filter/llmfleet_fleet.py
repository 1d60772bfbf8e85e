"""Fleet operations: blue/green colors, upgrade plans and rollback targets.

The state of a host is the local fact ``ansible_local.blue_green``
(``/etc/ansible/facts.d/blue_green.fact``, written by the blue_green role alone)::

    {"active": "blue", "previous": "green",
     "colors": {"blue":  {"build": "<build id>", "model": {...}, "args": "...", "port": 8081},
                "green": {"build": "<build id>", "model": {...}, "args": "...", "port": 8082,
                          "draft": {...}}}}

``draft`` (name, path, sha256, size) is there only for a color that runs speculative decoding.

``active`` is the color the front door sends traffic to; ``previous`` the color
that still holds the version the host ran before its last upgrade (empty when
there is none to go back to: after a rollback, or on a first install). Pure
functions; tests in tests/unit/test_fleet_filters.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MIB = 1024 * 1024
MODES = ("blue_green", "in_place")
STRATEGIES = ("auto", *MODES)


class FleetError(ValueError):
    """A state or a setting the filters cannot work with; the message says which."""


def _colors(colors: Mapping[str, Any]) -> dict[str, int]:
    """``{"blue": {"port": 8081}, ...}`` -> ``{"blue": 8081, ...}``, two colors, two ports."""
    if not isinstance(colors, Mapping) or len(colors) != 2:
        raise FleetError(f"llmfleet_engine_colors needs exactly two colors, got {colors!r}")
    ports = {}
    for name, entry in colors.items():
        port = entry.get("port") if isinstance(entry, Mapping) else None
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise FleetError(
                f"llmfleet_engine_colors.{name}.port must be a port number, got {port!r}"
            )
        ports[str(name)] = port
    if len(set(ports.values())) != 2:
        raise FleetError(f"the two colors need two different ports, got {ports}")
    return ports


def first_color(colors: Mapping[str, Any]) -> str:
    """The color a first install runs on: the first one named (blue)."""
    return next(iter(_colors(colors)))


def other_color(colors: Mapping[str, Any], color: str) -> str:
    """The color that is not ``color``."""
    ports = _colors(colors)
    if color not in ports:
        raise FleetError(f"unknown color {color!r} (colors: {', '.join(ports)})")
    return next(name for name in ports if name != color)


def active_color(state: Mapping[str, Any] | None, colors: Mapping[str, Any]) -> str:
    """The active color recorded on the host, else the first color (a first install)."""
    ports = _colors(colors)
    active = (state or {}).get("active") or ""
    if not active:
        return first_color(colors)
    if active not in ports:
        raise FleetError(
            f"the host's local fact names the active color {active!r}, which is not one of "
            f"llmfleet_engine_colors ({', '.join(ports)}); fix the fact or the colors"
        )
    return str(active)


def _mib(size_bytes: Any) -> int:
    try:
        size = int(size_bytes or 0)
    except (TypeError, ValueError) as error:
        raise FleetError(f"a model size must be a number of bytes, got {size_bytes!r}") from error
    if size < 0:
        raise FleetError(f"a model size cannot be negative, got {size}")
    return math.ceil(size / MIB)


def upgrade_mode(
    hardware: Mapping[str, Any],
    running_size: Any,
    new_size: Any,
    headroom_mib: int = 1024,
    overhead: float = 1.2,
    strategy: str = "auto",
) -> dict[str, Any]:
    """Blue/green when the host's memory holds both models at once, else in place.

    The memory is the usable VRAM (sum over the GPUs) on a host whose driver
    answers, else the RAM. ``headroom_mib`` is kept free per GPU (once on a CPU
    host); each model needs its file size times ``overhead`` (KV cache and
    compute buffers). ``strategy`` ``blue_green`` or ``in_place`` forces a mode.
    """
    if strategy not in STRATEGIES:
        raise FleetError(
            f"the upgrade strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
        )
    if float(overhead) < 1:
        raise FleetError(f"the model memory overhead must be at least 1, got {overhead}")
    gpus = int(hardware.get("gpu_count") or 0)
    on_gpu = (
        bool(hardware.get("driver_loaded"))
        and gpus > 0
        and hardware.get("usable_vram_mib") is not None
    )
    if on_gpu:
        memory, kind, reserve = int(hardware["usable_vram_mib"]), "VRAM", int(headroom_mib) * gpus
    else:
        memory, kind, reserve = int(hardware.get("memory_total_mib") or 0), "RAM", int(headroom_mib)
    available = max(memory - reserve, 0)
    needed = math.ceil((_mib(running_size) + _mib(new_size)) * float(overhead))
    fits = needed <= available
    if strategy == "auto":
        mode = "blue_green" if fits else "in_place"
        why = "both models fit" if fits else "two models do not fit"
    else:
        mode = strategy
        why = f"forced by the strategy {strategy}"
    return {
        "mode": mode,
        "memory": kind,
        "available_mib": available,
        "needed_mib": needed,
        "fits": fits,
        "reason": f"{why}: {needed} MiB needed for two models, {available} MiB of {kind} usable "
        f"({memory} MiB less {reserve} MiB headroom)",
    }


def color_record(
    build: str,
    model: Mapping[str, Any],
    args: str,
    port: int,
    draft: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What the fact keeps of one color: the engine build, the model and the command line;
    and the draft model of speculative decoding when the color runs one (no key otherwise)."""
    record = {
        "build": str(build),
        "model": {key: model.get(key) for key in ("name", "path", "sha256", "size")},
        "args": str(args),
        "port": int(port),
    }
    if draft:
        record["draft"] = {key: draft.get(key) for key in ("name", "path", "sha256", "size")}
    return record


def _identity(record: Mapping[str, Any] | None) -> tuple[Any, Any]:
    return ((record or {}).get("path"), (record or {}).get("sha256"))


def _differences(running: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    changes = []
    if running.get("build") != target.get("build"):
        changes.append("engine")
    old_model, new_model = running.get("model") or {}, target.get("model") or {}
    if (old_model.get("path"), old_model.get("sha256")) != (
        new_model.get("path"),
        new_model.get("sha256"),
    ):
        changes.append("model")
    if _identity(running.get("draft")) != _identity(target.get("draft")):
        changes.append("draft")
    if running.get("args") != target.get("args"):
        changes.append("settings")
    return changes


def upgrade_plan(
    state: Mapping[str, Any] | None,
    target: Mapping[str, Any],
    colors: Mapping[str, Any],
    mode: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What an upgrade does on one host: which color goes idle -> active and what changes.

    ``target`` is a :func:`color_record` (its port is ignored: the idle color's
    port is used). ``changed`` is false when the active color already runs the target. The
    order of the steps is the blue_green role's (tasks/switch.yml), not data.
    """
    if not state or not state.get("active"):
        raise FleetError(
            "the host has no blue_green local fact: it was never installed; "
            "run site.yml (or playbooks/inference.yml) first"
        )
    ports = _colors(colors)
    active = active_color(state, colors)
    idle = other_color(colors, active)
    running = (state.get("colors") or {}).get(active) or {}
    changes = _differences(running, target)
    chosen = (mode or {}).get("mode", "blue_green")
    if chosen not in MODES:
        raise FleetError(f"unknown upgrade mode {chosen!r}")
    new_record = dict(
        color_record(
            target["build"], target["model"], target["args"], ports[idle], target.get("draft")
        )
    )
    return {
        "changed": bool(changes),
        "changes": changes,
        "mode": chosen,
        "from_color": active,
        "to_color": idle,
        "from_port": ports[active],
        "to_port": ports[idle],
        "from": dict(running),
        "to": new_record,
        "state_after": switched_state(state, idle, new_record, previous=active)
        if changes
        else dict(state),
        "summary": (
            f"{chosen}: {active} -> {idle}; "
            + ", ".join(_change_text(change, running, new_record) for change in changes)
            if changes
            else f"up to date on {active}"
        ),
    }


def _change_text(change: str, running: Mapping[str, Any], target: Mapping[str, Any]) -> str:
    if change == "engine":
        return f"engine {running.get('build') or '(none)'} -> {target['build']}"
    if change == "model":
        old_name = (running.get("model") or {}).get("name") or "(none)"
        return f"model {old_name} -> {target['model']['name']}"
    if change == "draft":
        old_draft = (running.get("draft") or {}).get("name") or "none"
        return f"draft model {old_draft} -> {(target.get('draft') or {}).get('name') or 'none'}"
    return "server settings"


def switched_state(
    state: Mapping[str, Any] | None,
    color: str,
    record: Mapping[str, Any] | None = None,
    previous: str = "",
) -> dict[str, Any]:
    """The fact after ``color`` became active (its record replaced when one is given)."""
    state = dict(state or {})
    recorded = {name: dict(entry) for name, entry in (state.get("colors") or {}).items()}
    if record is not None:
        recorded[color] = dict(record)
    return {"active": color, "previous": previous, "colors": recorded}


def rollback_target(state: Mapping[str, Any] | None, colors: Mapping[str, Any]) -> dict[str, Any]:
    """Where a rollback takes a host: back to ``previous``, or nowhere.

    A second rollback finds ``previous`` empty (the first one cleared it) and
    changes nothing.
    """
    ports = _colors(colors)
    if not state or not state.get("active"):
        return {
            "changed": False,
            "reason": "no blue_green local fact: nothing was installed here",
        }
    active = active_color(state, colors)
    previous = state.get("previous") or ""
    recorded = state.get("colors") or {}
    if not previous:
        return {"changed": False, "reason": f"no previous version recorded; {active} stays active"}
    if previous not in ports or previous == active or previous not in recorded:
        return {
            "changed": False,
            "reason": f"the recorded previous color {previous!r} is not usable "
            f"(active {active}); nothing done",
        }
    record = recorded[previous]
    return {
        "changed": True,
        "from_color": active,
        "to_color": previous,
        "from_port": ports[active],
        "to_port": ports[previous],
        "from": dict(recorded.get(active) or {}),
        "to": dict(record),
        "state_after": switched_state(state, previous, previous=""),
        "reason": (
            f"back from {active} to {previous}: engine {record.get('build')}, "
            f"model {(record.get('model') or {}).get('name')}"
        ),
    }


def prunable(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[str, list[str]]:
    """Engine builds and model files (draft models too) the fact referenced before and no color
    references after."""

    def referenced(state: Mapping[str, Any] | None) -> tuple[set[str], set[str]]:
        records = ((state or {}).get("colors") or {}).values()
        builds = {str(r["build"]) for r in records if r.get("build")}
        models = {
            str((r.get(key) or {}).get("path"))
            for r in records
            for key in ("model", "draft")
            if (r.get(key) or {}).get("path")
        }
        return builds, models

    old_builds, old_models = referenced(before)
    new_builds, new_models = referenced(after)
    return {"builds": sorted(old_builds - new_builds), "models": sorted(old_models - new_models)}


class FilterModule:
    """llmfleet fleet operation filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "llmfleet_first_color": first_color,
            "llmfleet_other_color": other_color,
            "llmfleet_active_color": active_color,
            "llmfleet_upgrade_mode": upgrade_mode,
            "llmfleet_color_record": color_record,
            "llmfleet_upgrade_plan": upgrade_plan,
            "llmfleet_switched_state": switched_state,
            "llmfleet_rollback_target": rollback_target,
            "llmfleet_prunable": prunable,
        }
