"""Nothing rendered from the inventory is run by a shell (issue 13, item 7): the roles and
playbooks use no shell module, and every command task gives an argv, not a command line that
Ansible splits (a quote or `;` in an inventory value then stays one argument)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TASK_FILES = sorted(
    [
        *REPO.glob("roles/*/tasks/*.yml"),
        *REPO.glob("roles/*/handlers/*.yml"),
        *REPO.glob("playbooks/*.yml"),
        REPO / "site.yml",
    ]
)
SHELL = {"shell", "ansible.builtin.shell", "ansible.legacy.shell", "raw", "ansible.builtin.raw"}
COMMAND = {"command", "ansible.builtin.command", "ansible.legacy.command"}


def tasks(node: Any) -> list[dict[str, Any]]:
    """Every task mapping in a task file or playbook, blocks and plays included."""
    found: list[dict[str, Any]] = []
    if isinstance(node, list):
        for item in node:
            found += tasks(item)
    elif isinstance(node, dict):
        found.append(node)
        for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
            found += tasks(node.get(key))
    return found


@pytest.mark.parametrize("path", TASK_FILES, ids=[str(p.relative_to(REPO)) for p in TASK_FILES])
def test_no_shell_and_every_command_is_an_argv(path: Path) -> None:
    problems = []
    for task in tasks(yaml.safe_load(path.read_text())):
        name = task.get("name", "(unnamed)")
        problems += [f"{name!r} uses {key}" for key in SHELL & task.keys()]
        for key in COMMAND & task.keys():
            if not (isinstance(task[key], dict) and "argv" in task[key]):
                problems.append(f"{name!r}: {key} without argv ({task[key]!r})")
    assert problems == [], f"{path.relative_to(REPO)}: {problems}"
