"""The roles' interface checks: ranges, the two colors, and undeclared prefixed variables."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import load_module_file

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "filter" / "llmfleet_interface.py"
interface = load_module_file("llmfleet_interface_filters", PLUGIN)

RANGES = {"llmfleet_service_port": [1, 65535], "inference_service_parallel_slots": [1, 256]}


def test_values_in_range_and_unset_values_pass() -> None:
    values = {"llmfleet_service_port": 8080, "inference_service_parallel_slots": None}
    assert interface.range_problems(values, RANGES) == []


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("llmfleet_service_port", 99999, "llmfleet_service_port is 99999; allowed: 1 to 65535"),
        ("llmfleet_service_port", 0, "is 0; allowed: 1 to 65535"),
        ("inference_service_parallel_slots", -3, "inference_service_parallel_slots is -3"),
        ("inference_service_parallel_slots", "four", "is 'four'; allowed: a number from 1 to 256"),
        ("inference_service_parallel_slots", "nan", "allowed: a number from 1 to 256"),
        ("inference_service_parallel_slots", 1e308, "allowed: 1 to 256"),
        ("llmfleet_service_port", True, "is True; allowed: a number"),
        ("llmfleet_service_port", [80], "is [80]; allowed: a number"),
    ],
)
def test_out_of_range_values_are_named_with_what_is_allowed(name, value, says) -> None:
    [problem] = interface.range_problems({name: value}, RANGES)
    assert says in problem


def test_numbers_given_as_strings_are_checked_as_numbers() -> None:
    assert interface.range_problems({"llmfleet_service_port": "8080"}, RANGES) == []
    assert interface.range_problems({"llmfleet_service_port": "70000"}, RANGES)


@pytest.mark.parametrize(
    ("colors", "says"),
    [
        ({"blue": {"port": 8081}}, "exactly two colors"),
        ({"blue": {"port": 8081}, "green": {"port": 8081}}, "two different ports"),
        ({"blue": {"port": 8081}, "green": {"port": 70000}}, "green.port is 70000"),
        ({"blue": {"port": "8081"}, "green": {"port": 8082}}, "blue.port is '8081'"),
        ({"blue": 8081, "green": {"port": 8082}}, "blue.port is None"),
        ("blue", "exactly two colors"),
    ],
)
def test_bad_colors_are_named(colors, says) -> None:
    assert any(says in problem for problem in interface.color_problems(colors))


def test_the_default_colors_pass() -> None:
    defaults = yaml.safe_load((REPO / "roles/llmfleet/defaults/main.yml").read_text())
    assert interface.color_problems(defaults["llmfleet_engine_colors"]) == []


def test_declared_options_come_from_every_entry_point_of_every_role() -> None:
    specs = interface.role_specs(str(REPO / "roles"))
    assert {"llmfleet", "preflight", "blue_green"} <= set(specs)
    declared = interface.declared_options(list(specs.values()))
    assert "inference_service_color" in declared  # an input of the color entry point
    assert "llmfleet_service_port" in declared
    assert "front_door_drain_state" in declared


def test_a_misspelled_variable_is_found_and_facts_are_not() -> None:
    names = [
        "inference_servce_threads",  # one letter off the role's prefix: found
        "inference_service_prot",  # the role's prefix, undeclared: found
        "infrastructure_site",  # no role's prefix: not ours
        "inference_service_parallel_slots",
        "llmfleet_hardware",  # a gathered fact
        "preflight_tier",  # a cached output
        "__inference_service_config",  # internal
        "ansible_host",
        "test_capture",
    ]
    found = interface.undeclared_variables(
        names,
        ["inference_service", "llmfleet", "preflight"],
        ["inference_service_parallel_slots", "inference_service_threads"],
        ["llmfleet_hardware"],
    )
    assert found == [
        "inference_servce_threads (did you mean inference_service_threads?)",
        "inference_service_prot",
    ]


def test_the_default_rules_table_names_only_declared_variables() -> None:
    """Every variable the ranges table checks is one some role declares (no stale entry)."""
    specs = [
        yaml.safe_load(path.read_text()) for path in REPO.glob("roles/*/meta/argument_specs.yml")
    ]
    declared = set(interface.declared_options(specs))
    ranges = yaml.safe_load((REPO / "roles/llmfleet/vars/main.yml").read_text())
    table = ranges["__llmfleet_ranges"]
    assert sorted(set(table) - declared) == []
    assert all(low <= high for low, high in table.values())
