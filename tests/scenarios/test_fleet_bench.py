"""The fleet benchmark at N=2, so that it keeps working (scripts/fleet-bench.py).

It is a benchmark, not a speed test: this asserts what the document holds and that the
second run changed nothing, never how long anything took. The full runs (N = 1, 2, 5, 10)
are reported in the notes. Skipped with the Molecule scenarios (LLMFLEET_SKIP_SCENARIOS=1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.scenario,
    pytest.mark.skipif(
        os.environ.get("LLMFLEET_SKIP_SCENARIOS") == "1", reason="LLMFLEET_SKIP_SCENARIOS=1"
    ),
]


def test_fleet_bench_at_two_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document_path = tmp_path / "fleet-bench.json"
    with capsys.disabled():
        print("\n== scripts/fleet-bench.py --hosts 2 --mitogen", flush=True)
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts/fleet-bench.py"),
                "--hosts",
                "2",
                "--mitogen",
                "--json",
                str(document_path),
            ],
            cwd=REPO,
            check=False,
        )
    assert result.returncode == 0, "scripts/fleet-bench.py --hosts 2 failed (see the log above)"
    document = json.loads(document_path.read_text())
    assert document["schema"] == "llmfleet.fleet-bench/1"
    (run,) = document["results"]
    assert run["hosts"] == 2
    hosts = {"fb-host1", "fb-host2"}
    first, noop = run["first_rollout"], run["noop"]
    assert set(first["tasks"]) == hosts and set(noop["tasks"]) == hosts
    assert all(
        counts["failed"] == 0 for counts in [*first["tasks"].values(), *noop["tasks"].values()]
    )
    assert all(counts["changed"] > 0 for counts in first["tasks"].values())
    assert all(counts["changed"] == 0 for counts in noop["tasks"].values()), noop["tasks"]
    # the opt-in: Mitogen's no-op run ran the same tasks and changed nothing either
    mitogen = run["noop_mitogen"]
    assert {host: c["run"] for host, c in mitogen["tasks"].items()} == {
        host: c["run"] for host, c in noop["tasks"].items()
    }
    assert all(counts["changed"] == 0 for counts in mitogen["tasks"].values()), mitogen["tasks"]
    # one host built the engine, the other installed the published build
    assert set(first["engine_s"]) == hosts and set(first["engine_busy_s"]) == hosts
    assert set(first["engine_build_s"]) == set(first["engine_built_on"])
    assert set(first["engine_install_s"]) == hosts - set(first["engine_built_on"])
    assert len(run["engine_install_s_others"]) == 1
    # the first rollout downloaded at least the model from the mirror; the no-op nothing big
    model_bytes = run["mirror_throughput"]["bytes"]
    assert first["mirror_bytes_served"] >= 2 * model_bytes
    assert noop["mirror_bytes_served"] < model_bytes
    # the download phases: the model came in get_url downloads, the packages through apt
    downloads = run["downloads"]
    assert downloads["artifacts"]["bytes"] >= 2 * model_bytes
    assert downloads["artifacts"]["phase_s"] > 0 and downloads["apt"]["phase_s"] > 0
    assert (
        downloads["apt"]["bytes"] + downloads["artifacts"]["bytes"] == first["mirror_bytes_served"]
    )
    assert run["mirror_throughput"]["bytes_per_s"] > 0
    assert first["control_cpu_s"] > 0 and noop["control_cpu_s"] > 0
