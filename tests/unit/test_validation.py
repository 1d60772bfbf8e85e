"""llmfleet.validation: jsonschema with the schema's own messages, one per field, in order."""

from __future__ import annotations

import jsonschema
import pytest

from llmfleet.validation import Issue, check, compile_schema, order, strict_mapping

SCHEMA = strict_mapping(
    {
        "name": {
            "type": "string",
            "pattern": "^[a-z]+$",
            "message": {"type": "must be text, got {type}", "pattern": "{value!r} is not a name"},
            "missing": "is required (a name)",
        },
        "count": {"type": "integer", "minimum": 1, "message": "{key} must be 1 or more"},
        "tags": {"type": "array", "items": {"type": "string", "message": "not a tag: {value!r}"}},
        "env": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Z]+$", "message": "{value!r} is not a variable"},
            "additionalProperties": {"type": "string", "message": "{key} must be a string"},
        },
        "plain": {"type": "boolean"},
    },
    required=("name", "count"),
    message="must be a mapping",
    unknown="unknown key {key!r} (known: {allowed})",
)
VALIDATOR = compile_schema(SCHEMA)


def test_a_valid_document_has_no_issue() -> None:
    assert check(VALIDATOR, {"name": "a", "count": 2, "tags": ["x"], "env": {"A": "1"}}) == []


def test_every_message_comes_from_the_schema_one_per_path_in_document_order() -> None:
    document = {
        "tags": ["ok", 3],
        "colour": "red",
        "env": {"lower": "x", "B": 2},
        "name": "Bad",
        "size": 1,
    }
    assert check(VALIDATOR, document) == [
        Issue(("colour",), "unknown key 'colour' (known: count, env, name, plain, tags)"),
        Issue(("size",), "unknown key 'size' (known: count, env, name, plain, tags)"),
        Issue(("name",), "'Bad' is not a name"),
        Issue(("count",), "is required"),  # no "missing" on count: the default words
        Issue(("tags", 1), "not a tag: 3"),
        Issue(("env", "lower"), "'lower' is not a variable"),
        Issue(("env", "B"), "B must be a string"),
    ]


def test_missing_type_keyword_templates_and_jsonschema_words() -> None:
    assert check(VALIDATOR, {"count": 1}) == [Issue(("name",), "is required (a name)")]
    assert check(VALIDATOR, {"name": 7, "count": 0}) == [
        Issue(("name",), "must be text, got int"),
        Issue(("count",), "count must be 1 or more"),
    ]
    assert check(VALIDATOR, []) == [Issue((), "must be a mapping")]
    [issue] = check(VALIDATOR, {"name": "a", "count": 1, "plain": "yes"})
    assert issue.path == ("plain",) and "is not of type 'boolean'" in issue.message


@pytest.mark.parametrize("count", [3.0, True, "3"])
def test_an_integer_is_an_int_not_a_float_or_a_bool(count: object) -> None:
    assert [issue.path for issue in check(VALIDATOR, {"name": "a", "count": count})] == [("count",)]


def test_order_puts_unknown_keys_first_then_schema_order_then_list_positions() -> None:
    document = {"tags": ["a", "b"], "zzz": 1, "name": "n"}
    paths = [("tags", 1), ("name",), ("zzz",), ("tags", 0), ()]
    assert sorted(paths, key=lambda path: order(SCHEMA, document, path)) == [
        (),
        ("zzz",),
        ("name",),
        ("tags", 0),
        ("tags", 1),
    ]


def test_strict_mapping_and_a_wrong_schema() -> None:
    assert strict_mapping({"a": {}}) == {
        "type": "object",
        "unknown": "unknown key (allowed: {allowed})",
        "additionalProperties": False,
        "properties": {"a": {}},
    }
    with pytest.raises(jsonschema.SchemaError):
        compile_schema({"type": "nothing"})
