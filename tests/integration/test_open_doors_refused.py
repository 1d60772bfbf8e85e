"""No open door unless the inventory says so (issue 13, items 3 and 4): a fleet host that
serves beyond loopback without an API key, or metrics without a password, fails in the
llmfleet role's checks, naming the host and the variable, before any later task changes
anything; binding to loopback or saying so on purpose passes.

The llmfleet role runs through ansible-playbook on localhost (connection local, in the fleet
and monitoring groups), followed by a task that writes a file: the file is the "change".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KEY = "a-test-api-key"
PASSWORD = "a-test-metrics-password"


def converge(
    tmp_path: Path, variables: dict[str, Any]
) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = tmp_path / "changed"
    inventory = {
        "all": {
            "children": {
                "fleet": {"hosts": {"localhost": None}},
                "monitoring": {"hosts": {"localhost": None}},
            },
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                **variables,
            },
        }
    }
    play = {
        "name": "The llmfleet role's checks, then a change",
        "hosts": "fleet",
        "gather_facts": False,
        "roles": ["llmfleet"],
        "tasks": [
            {
                "name": "Change something",
                "ansible.builtin.copy": {"content": "x", "dest": str(marker), "mode": "0644"},
            }
        ],
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([play], sort_keys=False))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
         str(tmp_path / "play.yml")],
        cwd=REPO, capture_output=True, text=True, check=False, env=env, timeout=300,
    )  # fmt: skip
    return result, marker


@pytest.mark.parametrize(
    ("variables", "names"),
    [
        (
            {"llmfleet_service_bind_address": "0.0.0.0", "llmfleet_metrics_password": PASSWORD},
            ["localhost", "llmfleet_service_bind_address is 0.0.0.0", "llmfleet_api_key is empty"],
        ),
        (
            {"llmfleet_service_bind_address": "10.0.0.5", "llmfleet_metrics_password": PASSWORD},
            ["localhost", "llmfleet_service_bind_address is 10.0.0.5", "llmfleet_api_key"],
        ),
        (
            {"llmfleet_api_key": KEY},
            ["localhost", "llmfleet_metrics_password is empty"],
        ),
    ],
    ids=["api-on-all-interfaces-without-a-key", "api-on-an-address-without-a-key", "metrics-open"],
)
def test_an_open_door_fails_before_any_change(
    tmp_path: Path, variables: dict[str, Any], names: list[str]
) -> None:
    result, marker = converge(tmp_path, variables)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    missing = [name for name in names if name not in output]
    assert missing == [], output
    assert not marker.exists(), "a task ran after the failed check"


@pytest.mark.parametrize(
    "variables",
    [
        {"llmfleet_api_key": KEY, "llmfleet_metrics_password": PASSWORD},
        {"llmfleet_service_bind_address": "127.0.0.1", "llmfleet_metrics_password": PASSWORD},
        {
            "llmfleet_api_allow_unauthenticated": True,
            "llmfleet_metrics_allow_unauthenticated": True,
        },
    ],
    ids=["key-and-password", "loopback-only", "open-on-purpose"],
)
def test_a_closed_door_or_one_open_on_purpose_passes(
    tmp_path: Path, variables: dict[str, Any]
) -> None:
    result, marker = converge(tmp_path, variables)
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker.exists()
