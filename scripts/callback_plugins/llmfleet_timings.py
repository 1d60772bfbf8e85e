"""Ansible callback llmfleet_timings: one JSON line per task and host, with its times.

Used by scripts/fleet-bench.py to tell, per host, how long each role kept the host busy (the
engine's build on one host against its install on the others) and how long the downloads
took. Enabled with ANSIBLE_CALLBACKS_ENABLED=llmfleet_timings and
ANSIBLE_CALLBACK_PLUGINS=scripts/callback_plugins; the lines go to the file named by
LLMFLEET_TIMINGS_FILE.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: llmfleet_timings
type: aggregate
short_description: one JSON line per task and host with its start and end
description:
  - Writes to the file LLMFLEET_TIMINGS_FILE names, one line per finished task and host.
requirements: [enable in configuration]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "llmfleet_timings"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._path = os.environ.get("LLMFLEET_TIMINGS_FILE", "")
        self._started: dict[tuple[str, str], float] = {}

    def _write(self, result: Any, status: str) -> None:
        if not self._path:
            return
        host = result._host.get_name()
        task = result._task
        start = self._started.pop((host, task._uuid), None)
        end = time.time()
        role = task._role.get_name() if task._role else None
        # the task's file, from its role's folder on: "inference_engine/tasks/build.yml"
        path = (task.get_path() or "").rsplit(":", 1)[0]
        where = "/".join(path.split("/")[-3:]) if role else path.rsplit("/", 1)[-1]
        line = {"host": host, "task": task.get_name(), "role": role, "file": where,
                "action": task.action, "status": status, "start": start, "end": end}  # fmt: skip
        with open(self._path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(line) + "\n")

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        self._started[(host.get_name(), task._uuid)] = time.time()

    def v2_runner_on_ok(self, result: Any) -> None:
        self._write(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._write(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._write(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._write(result, "unreachable")
