"""Tools the integration tests run, from Debian's packages, unpacked, never installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def debian_tool(package: str, binary: str) -> str:
    """The path scripts/debian-tool.sh prints for `binary` of Debian's `package`."""
    result = subprocess.run(
        [str(REPO / "scripts" / "debian-tool.sh"), package, binary],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"scripts/debian-tool.sh {package} failed:\n{result.stderr}"
    path = result.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), f"scripts/debian-tool.sh printed {path!r}, not a program"
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return debian_tool("prometheus", "promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return debian_tool("prometheus-alertmanager", "amtool")


@pytest.fixture(scope="session")
def mtail() -> str:
    return debian_tool("mtail", "mtail")
