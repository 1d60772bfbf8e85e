"""scripts/fleet-bench.py's parsing: who built the engine (from the timings callback's lines,
as ansible-core names the tasks), each role's span and busy time per host, the download phases,
the play recap, the bytes the mirror's nginx served, and the summary of one N."""

from __future__ import annotations

from pathlib import Path

from helpers import load_module_file

bench = load_module_file(
    "fleet_bench", Path(__file__).resolve().parents[2] / "scripts" / "fleet-bench.py"
)

BUILD = "inference_engine : Build the server, the quantizer and the benchmarks (no network; ccache)"


#: Each task's file in its role and its module, as the roles have them (the same on every host).
TASKS = {
    "inference_engine : Look for nvcc": ("main.yml", "command"),
    BUILD: ("build.yml", "command"),
    "inference_engine : Put the build on the mirror": ("publish.yml", "command"),
    "inference_engine : Download the published build": ("install_published.yml", "get_url"),
    "inference_engine : Unpack the published build": ("install_published.yml", "command"),
    "model_store : Download the model": ("main.yml", "get_url"),
    "model_store : Download the tokenizer": ("main.yml", "get_url"),
    "node_metrics : Install the exporter": ("main.yml", "apt"),
}


def line(host: str, task: str, status: str, start: float, end: float) -> dict[str, object]:
    """A line of the timings callback for one task on one host."""
    role = task.split(" : ", 1)[0]
    file, action = TASKS[task]
    return {"host": host, "task": task, "role": role, "file": f"{role}/tasks/{file}",
            "action": f"ansible.builtin.{action}", "status": status, "start": start,
            "end": end}  # fmt: skip


TIMINGS = [
    line("fb-host1", "inference_engine : Look for nvcc", "ok", 100.0, 100.3),
    line("fb-host1", BUILD, "changed", 110.0, 124.3),
    line("fb-host1", "inference_engine : Put the build on the mirror", "changed", 130.0, 131.8),
    line("fb-host2", "inference_engine : Look for nvcc", "ok", 100.0, 100.2),
    line("fb-host2", BUILD, "skipped", 0.0, 0.0),
    line("fb-host2", "inference_engine : Download the published build", "changed", 132.0, 133.0),
    line("fb-host2", "inference_engine : Unpack the published build", "changed", 133.0, 135.5),
    line("fb-host1", "model_store : Download the model", "changed", 140.0, 149.0),
    line("fb-host2", "model_store : Download the model", "changed", 141.0, 150.0),
    line("fb-host1", "model_store : Download the tokenizer", "ok", 151.0, 152.0),
    line("fb-host1", "node_metrics : Install the exporter", "changed", 160.0, 163.0),
]


def test_the_builder_is_the_host_whose_build_task_changed() -> None:
    assert bench.builders(TIMINGS) == {"fb-host1"}
    # a build that found its binaries in place (creates:) built nothing
    assert bench.builders([{**TIMINGS[1], "status": "ok"}]) == set()


def test_a_roles_span_runs_from_its_first_start_to_its_last_end() -> None:
    assert bench.role_seconds(TIMINGS, "inference_engine") == {"fb-host1": 31.8, "fb-host2": 35.5}
    assert bench.role_seconds(TIMINGS, "model_store") == {"fb-host1": 12.0, "fb-host2": 9.0}


def test_a_roles_busy_time_leaves_out_the_waits_between_its_tasks() -> None:
    # host 2 waited from 100.2 to 132.0 while host 1 compiled: not part of its install
    assert bench.busy_seconds(TIMINGS, "inference_engine") == {"fb-host1": 16.4, "fb-host2": 3.7}
    # each side's own work: compile and publish, download and unpack (not the plan)
    assert bench.busy_seconds(TIMINGS, "inference_engine", bench.BUILD_FILES) == {"fb-host1": 16.1}
    assert bench.busy_seconds(TIMINGS, "inference_engine", bench.INSTALL_FILES) == {"fb-host2": 3.5}


def test_a_download_phase_is_the_union_of_the_downloads_that_fetched() -> None:
    # 132-133 on host 2, then 140-150 on both hosts at once; the tokenizer was in place
    assert bench.phase_seconds(TIMINGS, "get_url") == 11.0
    assert bench.phase_seconds(TIMINGS, "apt") == 3.0
    assert bench.phase_seconds(TIMINGS, "unarchive") == 0.0


def test_the_recap_and_the_served_bytes() -> None:
    output = (
        "PLAY RECAP ***\n"
        "fb-host1                   : ok=141  changed=0    unreachable=0    failed=0    "
        "skipped=80   rescued=0    ignored=0\n"
        "fb-mirror                  : ok=40   changed=2    unreachable=0    failed=0    "
        "skipped=10   rescued=0    ignored=0\n"
    )
    assert bench.recap(output) == {
        "fb-host1": {"ok": 141, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 80},
        "fb-mirror": {"ok": 40, "changed": 2, "unreachable": 0, "failed": 0, "skipped": 10},
    }
    log = (
        '10.0.0.3 - - [30/Nov/2026:08:00:00 +0] "GET /m.gguf HTTP/1.1" 200 98000000 "-" "x"\n'
        '10.0.0.3 - - [30/Nov/2026:08:00:01 +0] "GET /b.tgz HTTP/1.1" 206 500 "-" "x"\n'
        '10.0.0.3 - - [30/Nov/2026:08:00:02 +0] "GET /missing HTTP/1.1" 404 153 "-" "x"\n'
    )
    assert bench.served_bytes(log) == 98000500
    apt = '10.0.0.3 - - [30/Nov/2026:08:00:03 +0] "GET /apt/debian12/a.deb HTTP/1.1" 200 7 "-"\n'
    assert bench.served_bytes(log + apt, "apt") == 7
    assert bench.served_bytes(log + apt, "artifacts") == 98000500


def test_the_summary_splits_the_build_from_the_installs() -> None:
    first = {
        "engine_build_s": bench.busy_seconds(TIMINGS, "inference_engine", bench.BUILD_FILES),
        "engine_install_s": bench.busy_seconds(TIMINGS, "inference_engine", bench.INSTALL_FILES),
        "engine_built_on": sorted(bench.builders(TIMINGS)),
        "mirror_bytes_served": 200,
        "downloads": {"artifacts": {"bytes": 150, "phase_s": 11.0}},
    }
    summary = bench.summarize(2, first, {"wall_s": 10.0}, {"bytes_per_s": 100.0})
    assert summary["engine_build_s"] == 16.1
    assert summary["engine_install_s_others"] == [3.5]
    assert summary["engine_install_fraction"] == round(3.5 / 16.1, 3)
    assert summary["download_at_mirror_limit_s"] == 2.0
    assert summary["downloads"]["artifacts"] == {
        "bytes": 150,
        "phase_s": 11.0,
        "at_mirror_limit_s": 1.5,
        "ratio_to_limit": 7.3,
    }
