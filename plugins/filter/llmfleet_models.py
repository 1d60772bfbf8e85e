"""The model catalog (model_store_models): each tier's model and, opt-in, its draft model for
speculative decoding.

An entry may carry ``draft: {name, artifact, file[, max_tokens, min_tokens, p_min]}``: a
smaller model of the same vocabulary from the bundle, which proposes tokens the tier's model
then checks in one batch (llama-server ``--spec-type draft-simple``). An entry without one
serves without speculative decoding. The draft's numbers not given come from
``model_store_draft_defaults``. Pure functions; the llmfleet role checks the catalog on every
host before anything changes, model_store resolves the host's draft against the bundle's
manifest. Tests in tests/unit/test_model_catalog.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: What an entry names, and what its draft names (strings, not empty).
ENTRY_KEYS = ("tier", "name", "artifact", "file")
DRAFT_KEYS = ("name", "artifact", "file")
#: The draft's numbers and what each allows: (low, high, whole number).
DRAFT_LIMITS: dict[str, tuple[float, float, bool]] = {
    "max_tokens": (1, 256, True),  # --spec-draft-n-max: tokens drafted per step at most
    "min_tokens": (0, 256, True),  # --spec-draft-n-min: a shorter draft is not used
    "p_min": (0.0, 1.0, False),  # --spec-draft-p-min: drafting stops below this probability
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _allowed(low: float, high: float, whole: bool) -> str:
    kind = "a whole number" if whole else "a number"
    return f"{kind} from {low:g} to {high:g}"


def _value_problem(where: str, key: str, value: Any) -> str | None:
    low, high, whole = DRAFT_LIMITS[key]
    number = _number(value)
    if number is None or not low <= number <= high or (whole and not number.is_integer()):
        return f"{where}.{key} is {value!r}; allowed: {_allowed(low, high, whole)}"
    return None


def draft_defaults_problems(defaults: Any) -> list[str]:
    """model_store_draft_defaults: every number of DRAFT_LIMITS, each in its range."""
    where = "model_store_draft_defaults"
    if not isinstance(defaults, Mapping):
        return [f"{where} is {defaults!r}; allowed: a mapping of {', '.join(DRAFT_LIMITS)}"]
    problems = []
    unknown = sorted(set(map(str, defaults)) - set(DRAFT_LIMITS))
    if unknown:
        problems.append(
            f"{where} has unknown keys {', '.join(unknown)}; allowed: {', '.join(DRAFT_LIMITS)}"
        )
    for key in DRAFT_LIMITS:
        if key not in defaults:
            problems.append(f"{where}.{key} is missing; allowed: {_allowed(*DRAFT_LIMITS[key])}")
            continue
        problem = _value_problem(where, key, defaults[key])
        if problem:
            problems.append(problem)
    return problems


def draft_settings(draft: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The draft's numbers: its own, else the defaults' (max and min as ints, p_min a float)."""
    merged = {key: draft.get(key, defaults.get(key)) for key in DRAFT_LIMITS}
    return {
        "max_tokens": int(float(merged["max_tokens"])),
        "min_tokens": int(float(merged["min_tokens"])),
        "p_min": float(merged["p_min"]),
    }


def _entry_problems(index: int, entry: Any, defaults: Mapping[str, Any]) -> list[str]:
    if not isinstance(entry, Mapping):
        return [
            f"model_store_models[{index}] is {entry!r}; allowed: a mapping with "
            f"{', '.join(ENTRY_KEYS)} and context_length"
        ]
    tier = entry.get("tier")
    where = f"model_store_models[{index}] (tier {tier})" if tier else f"model_store_models[{index}]"
    problems = [
        f"{where}.{key} is {entry.get(key)!r}; allowed: a name (a string, not empty)"
        for key in ENTRY_KEYS
        if not isinstance(entry.get(key), str) or not entry.get(key, "").strip()
    ]
    context = _number(entry.get("context_length"))
    if context is None or context < 1 or not context.is_integer():
        problems.append(
            f"{where}.context_length is {entry.get('context_length')!r}; "
            "allowed: a whole number of tokens, 1 or more"
        )
    draft = entry.get("draft")
    if draft is None:
        return problems
    where = f"{where}.draft"
    if not isinstance(draft, Mapping):
        return [
            *problems,
            f"{where} is {draft!r}; allowed: a mapping with "
            f"{', '.join(DRAFT_KEYS)} (and {', '.join(DRAFT_LIMITS)}), or none",
        ]
    unknown = sorted(set(map(str, draft)) - set(DRAFT_KEYS) - set(DRAFT_LIMITS))
    if unknown:
        problems.append(
            f"{where} has unknown keys {', '.join(unknown)}; allowed: "
            f"{', '.join((*DRAFT_KEYS, *DRAFT_LIMITS))}"
        )
    problems += [
        f"{where}.{key} is {draft.get(key)!r}; allowed: a name (a string, not empty)"
        for key in DRAFT_KEYS
        if not isinstance(draft.get(key), str) or not draft.get(key, "").strip()
    ]
    value_problems = [
        problem
        for key in DRAFT_LIMITS
        if key in draft
        for problem in [_value_problem(where, key, draft[key])]
        if problem
    ]
    problems += value_problems
    if not value_problems and not draft_defaults_problems(defaults):
        numbers = draft_settings(draft, defaults)
        if numbers["min_tokens"] > numbers["max_tokens"]:
            problems.append(
                f"{where}.min_tokens is {numbers['min_tokens']}, more than max_tokens "
                f"{numbers['max_tokens']}; allowed: from 0 to max_tokens"
            )
    same_place = (draft.get("name"), draft.get("file")) == (entry.get("name"), entry.get("file"))
    if same_place and draft.get("artifact") != entry.get("artifact"):
        problems.append(
            f"{where} is the file of the model itself ({entry.get('name')}/{entry.get('file')}) "
            f"but names another artifact ({draft.get('artifact')!r}, not "
            f"{entry.get('artifact')!r}); allowed: the same artifact, or another name or file"
        )
    return problems


def catalog_problems(models: Any, draft_defaults: Any = None) -> list[str]:
    """One message per value of model_store_models (and model_store_draft_defaults) that is not
    what it allows, naming the entry (index and tier), the key and what is allowed; tiers
    named twice too. Empty when the catalog is fine."""
    defaults = draft_defaults if draft_defaults is not None else {}
    if not isinstance(models, list):
        return [f"model_store_models is {models!r}; allowed: a list of entries, one per tier"]
    problems = draft_defaults_problems(defaults) if draft_defaults is not None else []
    for index, entry in enumerate(models):
        problems += _entry_problems(index, entry, defaults)
    tiers = [entry.get("tier") for entry in models if isinstance(entry, Mapping)]
    twice = sorted({str(tier) for tier in tiers if tiers.count(tier) > 1})
    if twice:
        problems.append(
            f"model_store_models names the tiers {', '.join(twice)} more than once; "
            "allowed: one entry per tier"
        )
    return problems


def model_draft(
    entry: Mapping[str, Any],
    artifacts: Mapping[str, Any],
    model_dir: str,
    draft_defaults: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The draft of a catalog entry as model_store_model carries it (None: the entry has
    none): its name, path on disk, artifact, the manifest's sha256 and size, and its numbers."""
    draft = entry.get("draft")
    if not draft:
        return None
    artifact = artifacts.get(draft["artifact"]) or {}
    return {
        "name": draft["name"],
        "path": f"{str(model_dir).rstrip('/')}/{draft['name']}/{draft['file']}",
        "artifact": draft["artifact"],
        "sha256": artifact.get("sha256"),
        "size": int(artifact.get("size") or 0),
        **draft_settings(draft, draft_defaults),
    }


class FilterModule:
    """llmfleet model catalog filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "llmfleet_model_catalog_problems": catalog_problems,
            "llmfleet_model_draft": model_draft,
        }
