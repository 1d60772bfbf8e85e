"""The fleet benchmark's timings callback (scripts/callback_plugins/llmfleet_timings.py) under
a real ansible-playbook: one line per task and host, naming the role, the role's task file
(which tells the engine's build from its install), the module, the status and the times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_each_task_is_logged_with_its_role_file_module_and_times(tmp_path: Path) -> None:
    tasks = tmp_path / "roles" / "demo" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text(
        "- name: Say something\n"
        "  ansible.builtin.debug: {msg: hello}\n"
        "- name: Include the other file\n"
        "  ansible.builtin.include_tasks: other.yml\n"
    )
    (tasks / "other.yml").write_text(
        "- name: Change something\n"
        "  ansible.builtin.command: 'true'\n"
        "- name: Skip something\n"
        "  ansible.builtin.command: 'false'\n"
        "  when: false\n"
    )
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: localhost\n"
        "  gather_facts: false\n"
        "  roles: [demo]\n"
        "  tasks:\n"
        "    - name: A play's own task\n"
        "      ansible.builtin.debug: {msg: bye}\n"
    )
    timings = tmp_path / "timings.jsonl"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
         "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
        cwd=tmp_path,
        env={
            **os.environ,
            "ANSIBLE_CALLBACK_PLUGINS": str(REPO / "scripts" / "callback_plugins"),
            "ANSIBLE_CALLBACKS_ENABLED": "llmfleet_timings",
            "LLMFLEET_TIMINGS_FILE": str(timings),
        },
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in timings.read_text().splitlines()]
    seen = {
        (line["task"], line["role"], line["file"], line["action"], line["status"]) for line in lines
    }
    assert seen == {
        ("demo : Say something", "demo", "demo/tasks/main.yml", "ansible.builtin.debug", "ok"),
        ("demo : Include the other file", "demo", "demo/tasks/main.yml",
         "ansible.builtin.include_tasks", "ok"),
        ("demo : Change something", "demo", "demo/tasks/other.yml", "ansible.builtin.command",
         "changed"),
        ("demo : Skip something", "demo", "demo/tasks/other.yml", "ansible.builtin.command",
         "skipped"),
        ("A play's own task", None, "play.yml", "ansible.builtin.debug", "ok"),
    }  # fmt: skip
    assert all(line["host"] == "localhost" for line in lines)
    ran = [line for line in lines if line["status"] != "skipped"]
    assert all(0 < line["start"] <= line["end"] for line in ran)
