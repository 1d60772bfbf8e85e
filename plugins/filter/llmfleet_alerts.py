"""Alert rules as data: the operators' rules compiled into Prometheus recording and alert rules.

Operators write rules in their own shape (group_vars/all/alerts.yml)::

    - metric: gpu_utilization
      threshold: 90%
      duration: 5min
      action: send_notification

A catalog of known metrics (roles/monitoring/vars/main.yml, `monitoring_alert_catalog`)
gives each metric a PromQL value expression, the comparison, the unit the threshold must
have, the default severity and the alert's summary. A rule may bring its own PromQL value
expression (`expr`); its `metric` is then a free name.

Every value is recorded once, in the recording group, as `llmfleet:<name>:value`: one
series per catalog metric (`llmfleet:gpu_utilization:value`) and one per rule with its own
expr (named after the rule). A recorded series keeps the labels of its expression:
`instance`, and any other the summary names (`gpu`). Alerts only compare recorded series::

    llmfleet:gpu_utilization:value > 0.9

Inventories change a rule per group or per host with `llmfleet_alert_overrides`
({rule name or metric: {threshold, duration, action, severity, enabled}}). Each host
gets exactly its effective rule: the variant most hosts share is compiled for every
instance but the others, each other variant only for its own instances; a variant is the
same recorded series with one label matcher, never rewritten PromQL::

    llmfleet:gpu_utilization:value{instance!~"gpu-c|gpu-d"} > 0.9
    llmfleet:gpu_utilization:value{instance=~"gpu-c|gpu-d"} > 0.97

Every problem found in the rules and overrides is reported at once, naming the rule
and what is allowed. Pure functions; tests in tests/unit/test_alert_rules.py.

A rule's own `expr` is parsed at render time with `promql-parser` (a PyPI wheel of the Rust
PromQL parser; one of llmfleet's dependencies on the control node), so PromQL that does not
parse fails here, naming the rule, and not on the monitoring host after the other roles ran.
It follows Prometheus 3's grammar; Debian 12's Prometheus (2.42) spells
`double_exponential_smoothing` `holt_winters`, which is read as the same function. What a
parser cannot know (an experimental function Prometheus 2.42 lacks) is still caught by
`promtool check rules` when the monitoring role writes the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - only without ansible-core installed
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

RECORDING_GROUP = "llmfleet-recording"
ALERT_GROUP = "llmfleet-alerts"

ACTIONS = {
    "notify": "notify",
    "send_notification": "notify",
    "rollback": "rollback",
    "trigger_rollback": "rollback",
}
SEVERITIES = ("info", "warning", "critical")
COMPARISONS = (">", ">=", "<", "<=", "==", "!=")
RULE_KEYS = ("metric", "name", "threshold", "duration", "action", "severity", "expr", "summary",
             "enabled")  # fmt: skip
OVERRIDE_KEYS = ("threshold", "duration", "action", "severity", "enabled")
#: The variable that lets a fleet run without any alert rule on purpose.
ALLOW_EMPTY_VARIABLE = "llmfleet_alert_rules_allow_empty"
#: The longest duration taken. Prometheus keeps durations in int64 milliseconds (about
#: 292 million years); an alert held for longer than 10 years is a typo, not a rule.
MAX_DURATION_SECONDS = 10 * 365 * 86400

#: Unit kinds: what a threshold of that kind looks like, for messages.
KIND_EXAMPLES = {
    "ratio": "a percentage (e.g. 90%, 0.1%)",
    "seconds": "a time (e.g. 500ms, 2s, 1min)",
    "bytes": "a size (e.g. 512MiB, 2GiB)",
    "number": "a plain number (e.g. 100, 2.5)",
}
#: How the alert's summary shows the value of a rule with its own expr, per unit kind.
KIND_HUMANIZE = {
    "ratio": "{{ $value | humanizePercentage }}",
    "seconds": "{{ $value | humanizeDuration }}",
    "bytes": "{{ $value | humanize1024 }}B",
    "number": "{{ $value | humanize }}",
}

_SECOND_UNITS = {
    "us": Decimal("0.000001"),
    "µs": Decimal("0.000001"),
    "ms": Decimal("0.001"),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), Decimal(1)),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), Decimal(60)),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), Decimal(3600)),
    **dict.fromkeys(("d", "day", "days"), Decimal(86400)),
    **dict.fromkeys(("w", "week", "weeks"), Decimal(604800)),
}
_BYTE_UNITS = {
    "b": Decimal(1),
    "kb": Decimal(1000),
    "mb": Decimal(1000**2),
    "gb": Decimal(1000**3),
    "tb": Decimal(1000**4),
    "kib": Decimal(1024),
    "mib": Decimal(1024**2),
    "gib": Decimal(1024**3),
    "tib": Decimal(1024**4),
}

_THRESHOLD = re.compile(
    r"^\s*(?P<op>>=|<=|==|!=|>|<)?\s*"
    r"(?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*"
    r"(?P<unit>%|[A-Za-zµ]*)\s*$"
)
_NON_FINITE = re.compile(
    r"^\s*(?:>=|<=|==|!=|>|<)?\s*[+-]?\.?(?:nan|inf(?:inity)?)\s*(?:%|[A-Za-zµ]*)\s*$",
    re.IGNORECASE,
)
_DURATION_PART = re.compile(r"\s*(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-zµ]+)\s*")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
#: The longest own expr taken, and its deepest nesting of ( [ {: the parser recurses per
#: level and per operator, and a stack overflow there ends the whole ansible-playbook
#: process (a chain of 5000 operators does). A real rule's expr is a few hundred characters.
MAX_EXPR_CHARS = 2000
MAX_EXPR_DEPTH = 32
#: Prometheus 2.x's name of a function Prometheus 3 (and so the parser) calls otherwise.
_RENAMED_FUNCTIONS = {"holt_winters": "double_exponential_smoothing"}


class RuleError(ValueError):
    """A value of a rule that does not parse; the message says what is allowed."""


# --------------------------------------------------------------------------- parsing


def _number_text(value: Decimal) -> str:
    """A Decimal as PromQL writes a number: 0.001, 90, 2147483648."""
    text = format(value.normalize(), "f")
    return text[:-2] if text.endswith(".0") else text


def _scalar_text(value: Any, what: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise RuleError(f"{what} {value!r} is not a value")
    if isinstance(value, float):
        return repr(value)
    return str(value).strip()


def parse_threshold(value: Any) -> dict[str, Any]:
    """Parse a threshold as operators write it: `90%`, `0.1%`, `500ms`, `2s`, `2GiB`, `100`.

    An optional comparison may lead (`< 10%`); without one the catalog's applies.
    Returns {text, comparison (or None), kind, value}: `kind` is one of ratio, seconds,
    bytes, number and `value` the PromQL number in base units (a fraction for
    percentages, seconds for times, bytes for sizes). A percentage above 100% and a
    number that is not finite (`nan`, `inf`, `1e999%`) are refused.
    """
    text = _scalar_text(value, "threshold")
    allowed = (
        "write a number with an optional unit: 90%, 0.1%, 500ms, 2s, 512MiB, 2GiB, 100 "
        "(an optional leading >, >=, <, <=, ==, !=)"
    )
    found = _THRESHOLD.match(text)
    if not found:
        if _NON_FINITE.match(text):
            raise RuleError(f"threshold {text!r} is not a finite number; {allowed}")
        raise RuleError(f"threshold {text!r} does not parse; {allowed}")
    try:
        number = Decimal(found["num"])
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only numbers
        raise RuleError(f"threshold {text!r} does not parse") from exc
    unit = found["unit"]
    lowered = unit.lower()
    if unit == "%":
        kind, base = "ratio", number / 100
    elif not unit:
        kind, base = "number", number
    elif lowered in _SECOND_UNITS:
        kind, base = "seconds", number * _SECOND_UNITS[lowered]
    elif lowered in _BYTE_UNITS:
        kind, base = "bytes", number * _BYTE_UNITS[lowered]
    else:
        raise RuleError(
            f"threshold {text!r} has an unknown unit {unit!r}; known: % (percent), "
            "us, ms, s, min (time), B, KB, MB, GB, TB, KiB, MiB, GiB, TiB (size), or none"
        )
    if not math.isfinite(float(base)):
        raise RuleError(f"threshold {text!r} is not a finite number; {allowed}")
    if kind == "ratio" and number > 100:
        raise RuleError(
            f"threshold {text!r} is above 100%; a percentage is a share, from 0% to 100% "
            "(a rule with its own expr that compares a larger ratio writes a plain number, "
            "e.g. 1.5)"
        )
    number_text = text[found.start("num") :].strip()
    return {
        "text": number_text,
        "comparison": found["op"],
        "kind": kind,
        "value": _number_text(base),
    }


def _duration_text(milliseconds: int) -> str:
    """The shortest single-unit Prometheus duration for a number of milliseconds."""
    if milliseconds == 0:
        return "0s"
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds}ms"


def parse_duration(value: Any) -> dict[str, Any]:
    """Parse a duration as operators write it: `5min`, `1m`, `30s`, `1h30m`, `1.5h`.

    Returns {text, seconds, promql}: `promql` is the same time in one Prometheus unit
    (`5m`, `30s`, `90m`); a plain number without a unit is refused (seconds or minutes?),
    and so is anything longer than 10 years (MAX_DURATION_SECONDS).
    """
    text = _scalar_text(value, "duration")
    allowed = "write a number and a unit: 30s, 1m, 5min, 1h (or a sum such as 1h30m)"
    if re.fullmatch(r"[0-9.]+", text):
        raise RuleError(f"duration {text!r} has no unit; {allowed}")
    position, total = 0, Decimal(0)
    for part in _DURATION_PART.finditer(text):
        if part.start() != position:
            break
        unit = part["unit"].lower()
        if unit not in _SECOND_UNITS or unit in ("us", "µs"):
            raise RuleError(f"duration {text!r} has an unknown unit {part['unit']!r}; {allowed}")
        total += Decimal(part["num"]) * _SECOND_UNITS[unit]
        position = part.end()
    if position != len(text) or not text:
        raise RuleError(f"duration {text!r} does not parse; {allowed}")
    if total > MAX_DURATION_SECONDS:
        raise RuleError(
            f"duration {text!r} is longer than 10 years; Prometheus keeps durations in "
            "64-bit milliseconds and an alert held that long never fires: write at most "
            f"{MAX_DURATION_SECONDS // 86400}d"
        )
    milliseconds = total * 1000
    if milliseconds != milliseconds.to_integral_value():
        raise RuleError(f"duration {text!r} is finer than a millisecond; {allowed}")
    return {
        "text": text,
        "seconds": _number_text(total),
        "promql": _duration_text(int(milliseconds)),
    }


def normalize_action(value: Any) -> str:
    """`send_notification`/`notify` -> notify; `trigger_rollback`/`rollback` -> rollback."""
    text = _scalar_text(value, "action")
    key = re.sub(r"[\s-]+", "_", text.lower())
    if key not in ACTIONS:
        raise RuleError(f"action {text!r} is unknown; allowed: {', '.join(ACTIONS)}")
    return ACTIONS[key]


def render_summary(template: str, kind: str) -> str:
    """A summary in the catalog's words as a Prometheus template.

    `{value}` becomes the alert's value humanized for the unit kind, `{instance}` and
    any other `{label}` the label's value: `GPU {gpu} on {instance} is {value} busy` ->
    `GPU {{ $labels.gpu }} on {{ $labels.instance }} is {{ $value | humanizePercentage }} busy`.
    (Placeholders rather than Prometheus' own `{{ }}`, which Ansible would try to template.)
    """

    def replace(found: re.Match[str]) -> str:
        name = found[1]
        return KIND_HUMANIZE[kind] if name == "value" else f"{{{{ $labels.{name} }}}}"

    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", replace, template)


def normalize_severity(value: Any) -> str:
    text = _scalar_text(value, "severity").lower()
    if text not in SEVERITIES:
        raise RuleError(f"severity {text!r} is unknown; allowed: {', '.join(SEVERITIES)}")
    return text


def _enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise RuleError(f"enabled {value!r} is not true or false")
    return value


# --------------------------------------------------------------------------- series

#: A rule's own expr, read only to refuse a comparison in it: strings and label matchers
#: are blanked first; `x > bool 0` yields a value (0 or 1) and is allowed.
_EXPR_STRING = re.compile(r'"(?:\\.|[^"\\])*"' r"|'(?:\\.|[^'\\])*'" r"|`[^`]*`")
_EXPR_MATCHERS = re.compile(r"\{[^{}]*\}")
_EXPR_COMPARISON = re.compile(r"(?:[<>]=?|[=!]=)(?!\s*bool\b)")


def recorded_series(name: str) -> str:
    """The series recording a value: `gpu_utilization` -> `llmfleet:gpu_utilization:value`.

    Characters a metric name cannot hold (the `-` of a rule name) become `_`.
    """
    return f"llmfleet:{re.sub(r'[^A-Za-z0-9_]', '_', name)}:value"


def expr_comparison(expr: str) -> str | None:
    """The first comparison of a value expr (which must have none), or None."""
    bare = _EXPR_MATCHERS.sub("{}", _EXPR_STRING.sub('""', expr))
    found = _EXPR_COMPARISON.search(bare)
    return found.group() if found else None


def _expr_depth(bare: str) -> int:
    """The deepest nesting of ( [ { in an expr whose strings are blanked."""
    depth = deepest = 0
    for char in bare:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def expr_parse_problem(expr: str) -> str | None:
    """Why a rule's own expr is not a PromQL instant-vector or scalar expression, or None.

    Parsed with promql-parser (see the module docstring); an expr longer than
    MAX_EXPR_CHARS or nested deeper than MAX_EXPR_DEPTH is refused before the parser sees it.
    """
    if len(expr) > MAX_EXPR_CHARS:
        return f"expr is {len(expr)} characters long; at most {MAX_EXPR_CHARS} are taken"
    depth = _expr_depth(_EXPR_STRING.sub('""', expr))
    if depth > MAX_EXPR_DEPTH:
        return f"expr nests brackets {depth} deep; at most {MAX_EXPR_DEPTH} are taken"
    try:
        import promql_parser
    except ImportError:
        return (
            "expr cannot be checked: the Python package promql-parser is not installed next "
            "to Ansible on the control node (it is one of llmfleet's dependencies: "
            "pip install llmfleet, or promql-parser from the wheels carried in)"
        )
    renamed = re.sub(
        r"\b(" + "|".join(_RENAMED_FUNCTIONS) + r")(\s*\()",
        lambda found: _RENAMED_FUNCTIONS[found[1]] + found[2],
        expr,
    )
    try:
        parsed = promql_parser.parse(renamed)
    except Exception as exc:  # the parser raises ValueError with its reason
        reason = str(exc).strip() or type(exc).__name__
        return f"expr {expr!r} does not parse as PromQL: {reason}"
    while isinstance(parsed, promql_parser.ParenExpr):
        parsed = parsed.expr
    kinds = {
        promql_parser.MatrixSelector: "a range vector",
        promql_parser.SubqueryExpr: "a range vector (a subquery)",
        promql_parser.StringLiteral: "a string",
    }
    for kind, text in kinds.items():
        if isinstance(parsed, kind):
            return (
                f"expr {expr!r} is {text}; a rule records an instant vector or a number "
                "(e.g. rate(x[5m]), not x[5m])"
            )
    return None


def instance_matcher(hosts: Iterable[str], negate: bool = False) -> str:
    """`instance=~"a|b"` (or `!~`) for host names, regex metacharacters escaped."""
    escaped = sorted(re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", host) for host in hosts)
    pattern = "|".join(escaped).replace("\\", "\\\\").replace('"', '\\"')
    return f'instance{"!~" if negate else "=~"}"{pattern}"'


def alert_name(rule_name: str) -> str:
    """`gpu_utilization` -> `LlmfleetGpuUtilization`."""
    parts = re.split(r"[^A-Za-z0-9]+", rule_name)
    return "Llmfleet" + "".join(part[:1].upper() + part[1:] for part in parts if part)


# --------------------------------------------------------------------------- rules


def _catalog_entry(catalog: Mapping[str, Any], metric: str) -> dict[str, Any]:
    entry = dict(catalog[metric])
    missing = [key for key in ("expr", "comparison", "unit", "severity", "summary")
               if key not in entry]  # fmt: skip
    if missing:
        raise AnsibleFilterError(f"catalog entry {metric} lacks {', '.join(missing)}")
    return entry


def _rule_label(index: int, rule: Any) -> str:
    if isinstance(rule, Mapping):
        name = rule.get("name") or rule.get("metric")
        if name:
            return f"rule {index + 1} ({name})"
    return f"rule {index + 1}"


def _check_threshold(threshold: dict[str, Any], kind: str, metric: str) -> None:
    if threshold["kind"] != kind:
        raise RuleError(
            f"threshold {threshold['text']!r} is {KIND_EXAMPLES[threshold['kind']].split(' (')[0]}"
            f", but {metric} takes {KIND_EXAMPLES[kind]}"
        )


def normalize_rule(rule: Any, catalog: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """One operator rule, checked and filled from the catalog; returns (rule, problems)."""
    problems: list[str] = []
    if not isinstance(rule, Mapping):
        return {}, [f"is not a mapping with metric, threshold, duration, action: {rule!r}"]
    unknown = sorted(set(rule) - set(RULE_KEYS))
    if unknown:
        problems.append(f"has unknown keys {', '.join(unknown)}; allowed: {', '.join(RULE_KEYS)}")
    metric = rule.get("metric")
    if not isinstance(metric, str) or not _NAME.match(metric):
        problems.append(f"metric {metric!r} is missing or not a name (letters, digits, _ and -)")
        return {}, problems
    name = rule.get("name", metric)
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"name {name!r} is not a name (letters, digits, _ and -)")
        name = metric
    expr = rule.get("expr")
    entry: dict[str, Any]
    if expr is not None:
        if not isinstance(expr, str) or not expr.strip():
            problems.append("expr must be a PromQL expression (a string)")
            return {}, problems
        parse_problem = expr_parse_problem(expr.strip())
        comparison = None if parse_problem else expr_comparison(expr)
        if parse_problem:
            problems.append(parse_problem)
        elif comparison:
            problems.append(
                f"expr holds the comparison {comparison}; write only the value there, "
                "the threshold brings the comparison (e.g. threshold: '< 10%')"
            )
        entry = {"expr": expr.strip(), "comparison": ">", "unit": None, "severity": "warning"}
    elif metric in catalog:
        entry = _catalog_entry(catalog, metric)
    else:
        problems.append(
            f"metric {metric} is not in the catalog; known: {', '.join(sorted(catalog))} "
            "(or give the rule its own PromQL in expr)"
        )
        return {}, problems

    normalized: dict[str, Any] = {
        "name": name,
        "metric": metric,
        "catalog": expr is None,
        "expr": entry["expr"],
        "series": recorded_series(metric if expr is None else name),
        "unit": entry["unit"],
        "enabled": True,
    }
    threshold = rule.get("threshold", entry.get("threshold"))
    if threshold is None:
        problems.append(f"threshold is missing; {metric} takes {KIND_EXAMPLES[entry['unit']]}"
                        if entry["unit"] else "threshold is missing")  # fmt: skip
    else:
        try:
            parsed = parse_threshold(threshold)
            if entry["unit"]:
                _check_threshold(parsed, entry["unit"], metric)
            normalized["unit"] = entry["unit"] or parsed["kind"]
            normalized["threshold"] = parsed
            normalized["comparison"] = parsed["comparison"] or entry["comparison"]
        except RuleError as exc:
            problems.append(str(exc))
    steps = (
        ("duration", parse_duration, rule.get("duration")),
        ("action", normalize_action, rule.get("action")),
        ("severity", normalize_severity, rule.get("severity", entry["severity"])),
        ("enabled", _enabled, rule.get("enabled", True)),
    )
    for key, parse, value in steps:
        if value is None:
            problems.append(f"{key} is missing")
            continue
        try:
            normalized[key] = parse(value)
        except RuleError as exc:
            problems.append(str(exc))
    summary = rule.get("summary", entry.get("summary"))
    if summary is None:
        summary = f"{metric} on {{instance}} is {{value}}"
    if not isinstance(summary, str):
        problems.append(f"summary {summary!r} is not a string")
        summary = ""
    normalized["summary"] = render_summary(summary, normalized.get("unit") or "number")
    return normalized, problems


def validate_rules(rules: Any, catalog: Mapping[str, Any]) -> list[dict[str, Any]]:
    """All rules checked and normalized; raises AnsibleFilterError listing every problem."""
    if rules is None:
        rules = []
    if not isinstance(rules, Sequence) or isinstance(rules, (str, bytes)):
        raise AnsibleFilterError("llmfleet_alert_rules must be a list of rules")
    problems: list[str] = []
    normalized: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    catalog_series = {recorded_series(metric): metric for metric in catalog}
    own_series: dict[str, int] = {}
    for index, rule in enumerate(rules):
        result, found = normalize_rule(rule, catalog)
        label = _rule_label(index, rule)
        problems.extend(f"{label}: {problem}" for problem in found)
        if not result:
            continue
        if result["name"] in seen:
            problems.append(
                f"{label}: the name {result['name']} is taken by rule {seen[result['name']]}; "
                "give one of them its own name"
            )
        elif not result["catalog"]:
            own = _own_series_problems(result, catalog_series, own_series)
            problems.extend(f"{label}: {problem}" for problem in own)
            own_series.setdefault(result["series"], index + 1)
        seen.setdefault(result["name"], index + 1)
        normalized.append(result)
    if problems:
        raise AnsibleFilterError(_problems_message("llmfleet_alert_rules", problems))
    return normalized


def _own_series_problems(
    rule: dict[str, Any], catalog_series: Mapping[str, str], own_series: Mapping[str, int]
) -> list[str]:
    """A rule with its own expr records its value under its name: that name must be free."""
    series = rule["series"]
    if series in catalog_series:
        return [
            f"with its own expr it records {series}, which the catalog records for "
            f"{catalog_series[series]}; give the rule another name (name: {rule['name']}_own)"
        ]
    if series in own_series:
        return [f"it records {series}, as rule {own_series[series]} does; rename one of them"]
    return []


def _problems_message(where: str, problems: list[str]) -> str:
    return f"{where} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)


def apply_overrides(
    rules: list[dict[str, Any]], overrides: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rules (as validate_rules returns them) with one host's overrides applied.

    Keys of `overrides` are rule names; a key that names no rule but a metric applies to
    every rule of that metric. Returns (effective rules, problems).
    """
    if not overrides:
        return [dict(rule) for rule in rules], []
    if not isinstance(overrides, Mapping):
        return [], [f"must be a mapping of rule name to changes, not {overrides!r}"]
    effective = [dict(rule) for rule in rules]
    names = {rule["name"] for rule in rules}
    metrics = {rule["metric"] for rule in rules}
    problems: list[str] = []
    for key, changes in overrides.items():
        if key in names:
            targets = [rule for rule in effective if rule["name"] == key]
        elif key in metrics:
            targets = [rule for rule in effective if rule["metric"] == key]
        else:
            problems.append(f"{key}: no rule has this name or metric; rules: "
                            f"{', '.join(rule['name'] for rule in rules)}")  # fmt: skip
            continue
        if not isinstance(changes, Mapping):
            problems.append(f"{key}: must be a mapping with {', '.join(OVERRIDE_KEYS)}")
            continue
        unknown = sorted(set(changes) - set(OVERRIDE_KEYS))
        if unknown:
            problems.append(
                f"{key}: unknown keys {', '.join(unknown)}; allowed: {', '.join(OVERRIDE_KEYS)}"
            )
        for rule in targets:
            problems.extend(f"{key}: {problem}" for problem in _override(rule, changes))
    return effective, list(dict.fromkeys(problems))


def _override(rule: dict[str, Any], changes: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, parse in (
        ("duration", parse_duration),
        ("action", normalize_action),
        ("severity", normalize_severity),
        ("enabled", _enabled),
    ):
        if key in changes:
            try:
                rule[key] = parse(changes[key])
            except RuleError as exc:
                problems.append(str(exc))
    if "threshold" in changes:
        try:
            parsed = parse_threshold(changes["threshold"])
            _check_threshold(parsed, rule["unit"], rule["metric"])
            rule["threshold"] = parsed
            if parsed["comparison"]:
                rule["comparison"] = parsed["comparison"]
        except RuleError as exc:
            problems.append(str(exc))
    return problems


# --------------------------------------------------------------------------- compile


def _variant_key(rule: dict[str, Any]) -> tuple[Any, ...]:
    if not rule["enabled"]:
        return (False,)
    return (
        True,
        rule["comparison"],
        rule["threshold"]["value"],
        rule["duration"]["promql"],
        rule["action"],
        rule["severity"],
    )


def _alert(rule: dict[str, Any], matcher: str | None) -> dict[str, Any]:
    selector = f"{rule['series']}{{{matcher}}}" if matcher else rule["series"]
    threshold = rule["threshold"]
    return {
        "alert": alert_name(rule["name"]),
        "expr": f"{selector} {rule['comparison']} {threshold['value']}",
        "for": rule["duration"]["promql"],
        "labels": {
            "metric": rule["metric"],
            "action": rule["action"],
            "severity": rule["severity"],
            "rule": rule["name"],
        },
        "annotations": {
            "summary": rule["summary"],
            "description": (
                f"{rule['metric']} {rule['comparison']} {threshold['text']} "
                f"for {rule['duration']['text']} (rule {rule['name']}, action {rule['action']})"
            ),
        },
    }


def _flag(value: Any, variable: str) -> bool:
    """A true/false inventory value; `-e name=true` arrives as a string."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise AnsibleFilterError(f"{variable} must be true or false, not {value!r}")


def _effective_rules(
    rules: Any, catalog: Mapping[str, Any], overrides_by_host: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The validated rules and each host's effective rules; every problem raised at once."""
    base = validate_rules(rules, catalog)
    problems: dict[str, list[str]] = {}
    effective_by_host: dict[str, list[dict[str, Any]]] = {}
    for host, overrides in dict(overrides_by_host or {}).items():
        effective, found = apply_overrides(base, overrides)
        for problem in found:
            problems.setdefault(problem, []).append(str(host))
        effective_by_host[str(host)] = effective
    if problems:
        raise AnsibleFilterError(
            _problems_message(
                "llmfleet_alert_overrides",
                [f"{', '.join(where)}: {problem}" for problem, where in problems.items()],
            )
        )
    return base, effective_by_host


def _alerts(
    base: list[dict[str, Any]], effective_by_host: Mapping[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    for position, rule in enumerate(base):
        if not effective_by_host:
            if rule["enabled"]:
                alerts.append(_alert(rule, None))
            continue
        variants: dict[tuple[Any, ...], tuple[dict[str, Any], list[str]]] = {}
        for host in sorted(effective_by_host):
            variant = effective_by_host[host][position]
            variants.setdefault(_variant_key(variant), (variant, []))[1].append(host)
        base_key = _variant_key(rule)
        ordered = list(variants)
        common = max(ordered, key=lambda key: (len(variants[key][1]), key == base_key))
        others = [key for key in ordered if key != common]
        excluded = [host for key in others for host in variants[key][1]]
        common_rule = variants[common][0]
        if common_rule["enabled"]:
            matcher = instance_matcher(excluded, negate=True) if excluded else None
            alerts.append(_alert(common_rule, matcher))
        for key in others:
            variant, variant_hosts = variants[key]
            if variant["enabled"]:
                alerts.append(_alert(variant, instance_matcher(variant_hosts)))
    return alerts


def _refuse_empty(base: list[dict[str, Any]], alerts: list[dict[str, Any]], allow: Any) -> None:
    if alerts or _flag(allow, ALLOW_EMPTY_VARIABLE):
        return
    why = (
        "llmfleet_alert_rules and llmfleet_alert_extra_rules hold no rule"
        if not base
        else "every rule is disabled (enabled: false) on every host"
    )
    raise AnsibleFilterError(
        f"no alert rule is left: {why}, so the fleet would run unwatched. Add rules, or set "
        f"{ALLOW_EMPTY_VARIABLE}: true in the inventory to run without alerts on purpose"
    )


def compile_alerts(
    rules: Any,
    catalog: Mapping[str, Any],
    overrides_by_host: Mapping[str, Any] | None = None,
    allow_empty: Any = False,
) -> list[dict[str, Any]]:
    """Prometheus alerting rules for the operators' rules, per host as overridden.

    Each alert compares a recorded series (`llmfleet:<metric>:value`, see
    value_recording_rules) with its threshold. `overrides_by_host` maps each inventory
    host (its `instance` label) to its `llmfleet_alert_overrides` (None or {} for none).
    For each rule, the variant most hosts share (ties: the rule as written) applies to
    every instance except the hosts of the other variants (`{instance!~"a|b"}`); each
    other variant applies to its hosts only (`{instance=~"a|b"}`); a disabled variant
    compiles to nothing. Without hosts every rule compiles as written. No alert at all
    is refused unless `allow_empty` (llmfleet_alert_rules_allow_empty) is true.
    """
    base, effective_by_host = _effective_rules(rules, catalog, overrides_by_host)
    alerts = _alerts(base, effective_by_host)
    _refuse_empty(base, alerts, allow_empty)
    return alerts


def value_recording_rules(
    rules: list[dict[str, Any]], catalog: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The recording rules of the values the alerts compare, for validated `rules`.

    One per catalog metric (`llmfleet:gpu_utilization:value`), whether a rule uses it or
    not, then one per rule with its own expr (`llmfleet:<rule name>:value`). Each
    records its expression as it is, so the series keep the expression's labels.
    """
    recorded = [
        {"record": recorded_series(metric), "expr": _catalog_entry(catalog, metric)["expr"]}
        for metric in catalog
    ]
    recorded += [
        {"record": rule["series"], "expr": rule["expr"]} for rule in rules if not rule["catalog"]
    ]
    return recorded


def rules_file(
    rules: Any,
    catalog: Mapping[str, Any],
    recording_rules: Sequence[Mapping[str, Any]],
    overrides_by_host: Mapping[str, Any] | None = None,
    allow_empty: Any = False,
) -> dict[str, Any]:
    """The whole Prometheus rules document: the recording group, then the alert group.

    The recording group holds `recording_rules` (the catalog reads some of them), then
    the value of every catalog metric and of every rule with its own expr.
    """
    base, effective_by_host = _effective_rules(rules, catalog, overrides_by_host)
    alerts = _alerts(base, effective_by_host)
    _refuse_empty(base, alerts, allow_empty)
    values = value_recording_rules(base, catalog)
    taken = {rule.get("record") for rule in recording_rules} & {rule["record"] for rule in values}
    if taken:
        raise AnsibleFilterError(
            f"monitoring_recording_rules already records {', '.join(sorted(taken))}; names "
            "ending in :value are the alert rules' own (llmfleet:<metric>:value)"
        )
    return {
        "groups": [
            {"name": RECORDING_GROUP, "rules": [dict(rule) for rule in recording_rules] + values},
            {"name": ALERT_GROUP, "rules": alerts},
        ]
    }


def overrides_by_host(
    hostvars: Mapping[str, Any], hosts: Iterable[str], variable: str = "llmfleet_alert_overrides"
) -> dict[str, Any]:
    """{host: that host's `variable` or {}} for the hosts, from Ansible's hostvars."""
    result = {}
    for host in hosts:
        host_vars = hostvars[host]
        value = host_vars.get(variable)
        result[str(host)] = value or {}
    return result


class FilterModule:
    """llmfleet alert rule filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "llmfleet_alert_threshold": parse_threshold,
            "llmfleet_alert_duration": parse_duration,
            "llmfleet_alert_action": normalize_action,
            "llmfleet_alert_rules_validate": validate_rules,
            "llmfleet_alert_overrides_by_host": overrides_by_host,
            "llmfleet_alert_rules_compile": compile_alerts,
            "llmfleet_alert_rules_file": rules_file,
        }
