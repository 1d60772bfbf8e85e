"""JSON Schema checks whose messages a person can act on: jsonschema, in the schema's own words.

The bundle spec and the receiver's configuration are each described by a JSON Schema
(Draft 2020-12), checked with `jsonschema`. Three extra keywords, which JSON Schema itself
ignores, carry the messages:

``message``
    on a property's schema: the message when the value breaks it; a string, or a mapping
    from the failing keyword (``type``, ``pattern``, ``minItems``, ...) to a string.
``missing``
    on a property's schema: the message when a ``required`` property is absent.
``unknown``
    on an object's schema with ``additionalProperties: false``: the message for a key it
    does not know.

Messages are ``str.format`` templates with ``value`` (the value found), ``type`` (its
Python type name), ``key`` (the key the value is under) and, for ``unknown``, ``allowed``
(the known keys, sorted). Each problem comes back as an `Issue` with its path in the
document, at most one per path, in document order (schema order within a mapping).

The code keeps to the API of jsonschema 4.10 (Debian 12's python3-jsonschema), where the
rollback receiver runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema.validators import Draft202012Validator, extend

#: JSON Schema counts 3.0 as an integer; YAML's 3.0 is a float, and a port or a count must
#: be written as an integer. Booleans are never numbers (jsonschema already says so).
_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
)
_Validator = extend(Draft202012Validator, type_checker=_TYPES)

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Issue:
    """One problem: where it is in the document and what is wrong, in the schema's words."""

    path: Path
    message: str


def strict_mapping(
    properties: dict[str, Any],
    *,
    required: tuple[str, ...] = (),
    message: str | None = None,
    unknown: str = "unknown key (allowed: {allowed})",
    **extra: Any,
) -> dict[str, Any]:
    """The schema of a mapping with these keys only: `required` ones, `message` when the value
    is not a mapping, `unknown` for a key it does not know; `extra` adds keywords."""
    schema: dict[str, Any] = {
        "type": "object",
        "unknown": unknown,
        "additionalProperties": False,
        "properties": properties,
        **extra,
    }
    if required:
        schema["required"] = list(required)
    if message is not None:
        schema["message"] = message
    return schema


def compile_schema(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """A validator for `schema`, which is itself checked first (a wrong schema is a bug)."""
    _Validator.check_schema(schema)
    return _Validator(schema)


def check(validator: jsonschema.protocols.Validator, document: Any) -> list[Issue]:
    """Every problem `validator` finds in `document`: one Issue per path, in document order."""
    found: dict[Path, Issue] = {}
    for error in validator.iter_errors(document):
        for issue in _explain(error):
            found.setdefault(issue.path, issue)
    schema = validator.schema
    return sorted(found.values(), key=lambda issue: order(schema, document, issue.path))


def order(schema: Any, document: Any, path: Path) -> list[tuple[int, int]]:
    """A sort key for `path`: list positions, keys the schema does not name (unknown keys,
    free-form mappings) in the document's order, then named keys in the schema's order."""
    key: list[tuple[int, int]] = []
    node_schema, node = schema, document
    for part in path:
        node_schema = node_schema if isinstance(node_schema, Mapping) else {}
        if isinstance(part, int):
            key.append((0, part))
            node_schema = node_schema.get("items", {})
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            continue
        names = list(node_schema.get("properties", {}))
        if part in names:
            key.append((1, names.index(part)))
            node_schema = node_schema["properties"][part]
        else:
            keys = list(node) if isinstance(node, Mapping) else []
            key.append((0, keys.index(part) if part in keys else len(keys)))
            node_schema = node_schema.get("additionalProperties", {})
        node = node.get(part) if isinstance(node, Mapping) else None
    return key


def _explain(error: jsonschema.ValidationError) -> list[Issue]:
    path: Path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "required" and isinstance(error.instance, Mapping):
        properties = schema.get("properties", {})
        return [
            Issue(
                (*path, name),
                _format(properties.get(name, {}).get("missing", "is required"), None, name),
            )
            for name in error.validator_value
            if name not in error.instance
        ]
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = sorted(schema.get("properties", {}))
        template = schema.get("unknown", "unknown key (allowed: {allowed})")
        return [
            Issue((*path, name), _format(template, error.instance.get(name), name, known))
            for name in error.instance
            if name not in known
        ]
    if len(error.schema_path) >= 2 and list(error.schema_path)[-2] == "propertyNames":
        # jsonschema checks a key as the instance at its mapping's path: name the key
        return [Issue((*path, error.instance), _message(schema, error, error.instance))]
    key = path[-1] if path else None
    return [Issue(path, _message(schema, error, key))]


def _message(schema: Mapping[str, Any], error: jsonschema.ValidationError, key: Any) -> str:
    template = schema.get("message")
    if isinstance(template, Mapping):
        template = template.get(error.validator)
    if not isinstance(template, str):
        return error.message
    return _format(template, error.instance, key)


def _format(template: str, value: Any, key: Any, allowed: list[str] | None = None) -> str:
    return template.format(
        value=value, type=type(value).__name__, key=key, allowed=", ".join(allowed or [])
    )
