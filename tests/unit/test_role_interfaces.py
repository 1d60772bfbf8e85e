"""Each role's public API: defaults/main.yml, meta/argument_specs.yml and its entry points.

- every variable of defaults/main.yml is declared by an entry point of the role, and every
  `default:` an entry point states is the value defaults/main.yml gives (one value, stated twice,
  checked here);
- every role is entered from outside only through an entry point it declares: each
  `include_role`/`import_role` with `tasks_from:` in roles, playbooks and scenarios names a
  declared entry point, and no task includes another role's task files by path;
- every role but the defaults role depends on it (meta/main.yml), so the shared values are set
  wherever a role runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(path.parent.parent.name for path in REPO.glob("roles/*/meta/argument_specs.yml"))
DEFAULTS_ROLE = "llmfleet"


def defaults(role: str) -> dict[str, Any]:
    path = REPO / "roles" / role / "defaults" / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def entry_points(role: str) -> dict[str, dict[str, Any]]:
    spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return spec["argument_specs"]


def test_roles_are_found() -> None:
    assert {"preflight", "blue_green", DEFAULTS_ROLE} <= set(ROLES)
    assert sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir()) == ROLES


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_declared(role: str) -> None:
    declared = set().union(*(set(e.get("options") or {}) for e in entry_points(role).values()))
    assert sorted(set(defaults(role)) - declared) == []


@pytest.mark.parametrize("role", ROLES)
def test_every_stated_default_is_the_defaults_value(role: str) -> None:
    values = defaults(role)
    wrong = []
    for entry, spec in entry_points(role).items():
        for name, option in (spec.get("options") or {}).items():
            if "default" in option and (name not in values or option["default"] != values[name]):
                wrong.append(
                    f"{entry}.{name}: spec {option['default']!r}, defaults {values.get(name)!r}"
                )
            if option.get("required") and "default" in option:
                wrong.append(f"{entry}.{name}: required and default: Ansible refuses both")
            if "default" not in option and name in values and not option.get("required"):
                wrong.append(f"{entry}.{name}: no default: in the spec (defaults/main.yml has one)")
    assert wrong == []


@pytest.mark.parametrize("role", ROLES)
def test_main_declares_every_default(role: str) -> None:
    """The main entry point states the role's whole API (a caller of main may set any of it)."""
    main = set(entry_points(role)["main"].get("options") or {})
    inputs_of_other_entries = {
        name
        for entry, spec in entry_points(role).items()
        if entry != "main"
        for name in spec.get("options") or {}
    }
    assert sorted(set(defaults(role)) - main - inputs_of_other_entries) == []


@pytest.mark.parametrize("role", [r for r in ROLES if r != DEFAULTS_ROLE])
def test_role_depends_on_the_defaults_role(role: str) -> None:
    meta = yaml.safe_load((REPO / "roles" / role / "meta" / "main.yml").read_text())
    names = [d["role"] if isinstance(d, dict) else d for d in meta.get("dependencies") or []]
    assert DEFAULTS_ROLE in names


def tasks(node: Any) -> Iterator[dict[str, Any]]:
    """Every task dict in a playbook or task file, blocks and rescues included."""
    if isinstance(node, list):
        for item in node:
            yield from tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            if key in node:
                yield from tasks(node[key])


def role_includes() -> Iterator[tuple[str, str, str | None]]:
    """(file, role, tasks_from) of every include_role/import_role in the project."""
    files = [*REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("roles/*/handlers/*.yml"),
             *REPO.glob("playbooks/*.yml"), *REPO.glob("molecule/**/*.yml")]  # fmt: skip
    for path in files:
        document = yaml.safe_load(path.read_text())
        for task in tasks(document):
            for module in ("include_role", "import_role"):
                for key in (f"ansible.builtin.{module}", module):
                    if isinstance(task.get(key), dict):
                        call = task[key]
                        yield str(path.relative_to(REPO)), call["name"], call.get("tasks_from")


INCLUDES = list(role_includes())


def test_includes_are_found() -> None:
    assert any(role == "blue_green" and entry == "upgrade" for _, role, entry in INCLUDES)


@pytest.mark.parametrize(("path", "role", "entry"), INCLUDES, ids=lambda v: str(v))
def test_roles_are_entered_through_declared_entry_points(path: str, role: str, entry: str) -> None:
    name = (entry or "main").removesuffix(".yml")
    assert "/" not in name, f"{path} includes {role}'s task file by path: {entry}"
    assert name in entry_points(role), (
        f"{path} enters role {role} at {name!r}, which its meta/argument_specs.yml does not declare"
    )
