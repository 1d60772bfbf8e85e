"""The pure parts of scripts/artifact-noop-bench.py: the generated artifact, the test bundle's
spec, the fetch entry point's time from the timings callback, the statistics and the table.

The benchmark itself (containers, a 4 GiB file) runs by hand; it asserts nothing about speed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import load_module_file

from llmfleet.bundle.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]
bench = load_module_file("artifact_noop_bench", REPO / "scripts" / "artifact-noop-bench.py")


def test_the_pattern_is_the_same_bytes_for_the_same_seed_and_size() -> None:
    first = b"".join(bench.pattern(3 * 1024 + 5, chunk=1024))
    again = b"".join(bench.pattern(3 * 1024 + 5, chunk=1024))
    assert first == again
    assert len(first) == 3 * 1024 + 5
    assert first != b"".join(bench.pattern(3 * 1024 + 5, seed="another", chunk=1024))
    # not a repeated block: the chunks differ from each other
    chunks = list(bench.pattern(4096, chunk=1024))
    assert [len(c) for c in chunks] == [1024] * 4
    assert len(set(chunks)) == 4


def test_generate_writes_the_pattern_and_returns_its_sha256(tmp_path: Path) -> None:
    path = tmp_path / "artifact.bin"
    sha256 = bench.generate(path, 10_000, chunk=4096)
    data = path.read_bytes()
    assert len(data) == 10_000
    assert sha256 == hashlib.sha256(data).hexdigest()
    assert data == b"".join(bench.pattern(10_000, chunk=4096))


def test_the_bundle_spec_is_the_ci_bundles_apt_and_model_and_the_artifact(tmp_path: Path) -> None:
    ci = yaml.safe_load((REPO / "bundles" / "ci.yml").read_text())
    artifact = tmp_path / "artifact.bin"
    document = bench.bundle_spec(ci, artifact, "ab" * 32)
    assert document["apt"] == ci["apt"]
    model, generated = document["files"]
    assert model == next(f for f in ci["files"] if f["name"] == "model-smollm2-135m-instruct")
    assert generated == {
        "name": "artifact-noop-bench",
        "url": f"file://{artifact}",
        "sha256": "ab" * 32,
        "dest": "models/artifact-noop-bench.bin",
    }
    # the builder's own parser takes it
    parsed = parse_spec(document, {"LLMFLEET_DEBIAN_MIRROR": "http://deb.example/debian"})
    assert [entry.name for entry in parsed.files] == [
        "model-smollm2-135m-instruct",
        "artifact-noop-bench",
    ]


def test_the_bundle_spec_needs_the_ci_bundles_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model-smollm2-135m-instruct"):
        bench.bundle_spec({"apt": [], "files": []}, tmp_path / "a.bin", "ab" * 32)


def line(task: str, start: float | None, end: float, role: str = "mirror_client") -> dict:
    # named as ansible-core names a role's task: "<role> : <task>"
    return {"host": "an-host1", "task": f"{role} : {task}", "role": role, "status": "ok",
            "start": start, "end": end}  # fmt: skip


def test_fetch_seconds_runs_from_the_fetch_entry_points_first_task() -> None:
    timings = [
        line("Check the numbers the inventory sets", 0.0, 0.1, role="llmfleet"),
        line("Read and verify the bundle's manifest on the mirror", 0.2, 1.5),
        line("Keep the bundle's artifacts for the roles that download them", 1.5, 1.6),
        line("Check that the bundle has the artifact artifact-noop-bench", 2.0, 2.1),
        line("Look at the file in place and at its marker /srv/a.bin", 2.1, 2.6),
        line("Download into place /srv/a.bin", None, 2.7),  # skipped: no start
        line("Read the marker /srv/a.bin", 2.7, 3.25),
    ]
    assert bench.fetch_seconds(timings) == 1.25
    assert bench.fetch_seconds(timings[:3]) is None


def run(side: str, markers: bool, wall: float, fetch: float | None = 1.0) -> dict[str, Any]:
    return {"side": side, "markers": markers, "wall_s": wall, "fetch_s": fetch}


RUNS = [
    run("model", True, 10.0, 2.0),
    run("artifact", True, 10.5, 2.2),
    run("model", False, 12.0, 3.0),
    run("artifact", False, 20.0, 11.0),
    run("model", True, 11.0, 2.0),
    run("artifact", True, 10.0, 2.0),
    run("model", False, 12.5, 3.0),
    run("artifact", False, 21.0, 12.0),
    run("model", True, 30.0, 2.5),  # one slow outlier: the median ignores it
    run("artifact", True, 11.0, 2.4),
    run("model", False, 11.5, 3.5),
    run("artifact", False, 19.0, 10.0),
]


def test_compare_takes_the_medians_of_each_side_and_their_ratio() -> None:
    kept = bench.compare(RUNS, True)
    assert kept["model"] == {
        "runs": 3,
        "median_s": 11.0,
        "min_s": 10.0,
        "max_s": 30.0,
        "wall_s": [10.0, 11.0, 30.0],
        "fetch_median_s": 2.0,
    }
    assert kept["artifact"]["median_s"] == 10.5
    assert kept["ratio"] == round(10.5 / 11.0, 3)
    assert kept["fetch_ratio"] == 1.1
    removed = bench.compare(RUNS, False)
    assert removed["model"]["median_s"] == 12.0
    assert removed["artifact"]["median_s"] == 20.0
    assert removed["ratio"] == round(20.0 / 12.0, 3)
    assert removed["fetch_ratio"] == round(11.0 / 3.0, 3)


def test_compare_without_fetch_times_has_no_fetch_ratio() -> None:
    runs = [run("model", True, 1.0, None), run("artifact", True, 1.0, None)]
    assert bench.compare(runs, True)["fetch_ratio"] is None


def test_compare_needs_both_sides() -> None:
    with pytest.raises(ValueError, match="artifact"):
        bench.compare([run("model", True, 1.0)], True)


def test_checked_refuses_a_no_op_that_changed_or_a_run_that_downloaded() -> None:
    ok = {"side": "model", "markers": True, "changed": 0, "mirror_bytes_served": 2_000}
    assert bench.checked(ok, 98_000_000) is ok
    assert bench.checked({**ok, "markers": False, "changed": 1}, 98_000_000)
    with pytest.raises(RuntimeError, match="changed something"):
        bench.checked({**ok, "changed": 1}, 98_000_000)
    with pytest.raises(RuntimeError, match="downloaded the file again"):
        bench.checked({**ok, "markers": False, "mirror_bytes_served": 98_000_500}, 98_000_000)


def test_the_table_shows_both_modes_and_the_ratios() -> None:
    document = {
        "model": {"name": "model-smollm2-135m-instruct", "size": 97_890_000},
        "artifact": {"name": "artifact-noop-bench", "size": 4 * 1024**3},
        "target_ratio": 1.10,
        "markers_kept": bench.compare(RUNS, True),
        "markers_removed": bench.compare(RUNS, False),
    }
    text = bench.table(document)
    lines = text.splitlines()
    assert lines[0].split() == ["markers", "artifact", "size", "runs", "median", "s", "min", "s",
                                "max", "s", "fetch", "s"]  # fmt: skip
    assert lines[2].split() == ["kept", "model-smollm2-135m-instruct", "98", "MB", "3", "11.00",
                                "10.00", "30.00", "2.00"]  # fmt: skip
    assert lines[5].split()[:4] == ["removed", "artifact-noop-bench", "4", "GiB"]
    assert "markers kept 0.955 (target within 1.10), markers removed 1.667" in text
    assert "fetch entry point alone: markers kept 1.100, markers removed 3.667" in text
