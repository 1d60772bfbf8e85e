"""Each role's public API is stated three times: defaults, argument_specs, README.

These tests keep the three in step, so the README's variable tables cannot drift
from what the roles accept.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(path.parent.parent.name for path in REPO.glob("roles/*/defaults/main.yml"))


def defaults(role: str) -> set[str]:
    return set(yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {})


def spec_options(role: str) -> set[str]:
    spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return set(spec["argument_specs"]["main"].get("options", {}))


def test_roles_are_found() -> None:
    assert "preflight" in ROLES


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_state_every_default(role: str) -> None:
    assert defaults(role) == spec_options(role)


@pytest.mark.parametrize("role", ROLES)
def test_readme_documents_every_variable(role: str) -> None:
    readme = (REPO / "README.md").read_text()
    missing = sorted(name for name in defaults(role) if f"`{name}`" not in readme)
    assert not missing, f"README.md does not document {missing} of role {role}"
