"""Lint is part of the test suite: yamllint --strict, ansible-lint (production profile), ruff."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    """The tool from the interpreter's own environment (the venv), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: run scripts/dev.sh test, which installs the pinned tools"
        )
    return found


LINTERS = {
    "yamllint": ["yamllint", "--strict", "."],
    "ansible-lint": ["ansible-lint", "--profile", "production", "--offline"],
    "ruff-check": ["ruff", "check", "."],
    "ruff-format": ["ruff", "format", "--check", "."],
}


@pytest.mark.parametrize("name", LINTERS)
def test_lint_is_clean(name: str) -> None:
    command = LINTERS[name]
    result = subprocess.run(
        [tool(command[0]), *command[1:]], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
