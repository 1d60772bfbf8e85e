"""Each Molecule scenario is one test: create, converge, idempotence, check, verify, destroy.

The scenarios run Debian 12 systemd containers on the local Docker engine
(`scripts/dev.sh test` prepares the engine and the image). Their output goes
straight to the terminal, so a CI log shows every play as it runs.
Set LLMFLEET_SKIP_SCENARIOS=1 to leave them out on a machine with no Docker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(path.parent.name for path in (REPO / "molecule").glob("*/molecule.yml"))

pytestmark = [
    pytest.mark.scenario,
    pytest.mark.skipif(
        os.environ.get("LLMFLEET_SKIP_SCENARIOS") == "1", reason="LLMFLEET_SKIP_SCENARIOS=1"
    ),
]


def test_every_scenario_is_collected() -> None:
    assert SCENARIOS, "no Molecule scenario found under molecule/"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario: str, capsys: pytest.CaptureFixture[str]) -> None:
    molecule = Path(sys.executable).parent / "molecule"
    with capsys.disabled():
        print(f"\n== molecule test -s {scenario}", flush=True)
        result = subprocess.run([str(molecule), "test", "-s", scenario], cwd=REPO, check=False)
    assert result.returncode == 0, f"molecule test -s {scenario} failed (see the log above)"
