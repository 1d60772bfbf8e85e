"""free_space: free bytes where a path is (or will be), measured on its nearest existing folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import free_space
import pytest

REPO = Path(__file__).resolve().parents[2]


def test_nearest_existing_walks_up_to_a_folder_that_exists(tmp_path: Path) -> None:
    assert free_space.nearest_existing(str(tmp_path / "a" / "b" / "c")) == str(tmp_path)
    assert free_space.nearest_existing(str(tmp_path)) == str(tmp_path)


def test_mount_point_of_a_path_is_a_mount_above_it(tmp_path: Path) -> None:
    mount = free_space.mount_point(str(tmp_path))
    assert os.path.ismount(mount)
    assert str(tmp_path.resolve()).startswith(mount)


def test_measure_reports_statvfs_of_the_nearest_existing_folder(tmp_path: Path) -> None:
    result = free_space.measure(str(tmp_path / "models" / "x"))
    stats = os.statvfs(tmp_path)
    assert result["path"] == str(tmp_path / "models" / "x")
    assert result["existing"] == str(tmp_path)
    # Free space moves as the machine works; the same filesystem reads within a few MiB.
    assert abs(result["avail_bytes"] - stats.f_bavail * stats.f_frsize) < 64 * 1024 * 1024


def run(*paths: str) -> dict:
    """The module run by Ansible itself against localhost, as a role runs it."""
    env = {
        **os.environ,
        "ANSIBLE_LIBRARY": str(REPO / "plugins" / "modules"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "json",
    }
    ansible = Path(sys.executable).parent / "ansible"
    arguments = json.dumps({"paths": list(paths)})
    interpreter = f"ansible_python_interpreter={sys.executable}"
    completed = subprocess.run(
        [str(ansible), "localhost", "-m", "free_space", "-a", arguments, "-e", interpreter],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=REPO,
    )
    document = json.loads(completed.stdout)
    return document["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_module_measures_each_path_in_order(tmp_path: Path) -> None:
    result = run(str(tmp_path / "not-yet"), "/")
    assert result["changed"] is False
    assert [entry["path"] for entry in result["filesystems"]] == [str(tmp_path / "not-yet"), "/"]
    assert result["filesystems"][1]["mount"] == "/"
    assert all(entry["avail_bytes"] >= 0 for entry in result["filesystems"])


def test_module_refuses_a_relative_path() -> None:
    result = run("data/models")
    assert result["failed"] is True
    assert "paths must be absolute, got data/models" in result["msg"]


@pytest.mark.parametrize("path", ["/", "/proc"])
def test_mount_point_of_a_mount_is_itself(path: str) -> None:
    assert free_space.mount_point(path) == path
