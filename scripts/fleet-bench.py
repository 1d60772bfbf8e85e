#!/usr/bin/env python3
"""The fleet benchmark: how a rollout and a no-op run grow with the number of hosts.

For each N (default 1, 2, 5, 10) it starts a mirror and N fleet hosts as Debian 12 systemd
containers on an internal Docker network of their own (molecule/resources/create.yml, the
scenarios' own), publishes the CI bundle, runs site.yml (the first rollout) and then site.yml
again (a no-op run), and reports for each run:

- the wall time, and the control node's CPU seconds (ansible-playbook and its workers) per host;
- the tasks each host ran (ok, changed, failed; not skipped), from the play recap;
- the engine's install time on each host: the seconds the tasks of the inference_engine role
  kept that host busy (from a callback that logs each task's times:
  scripts/callback_plugins/llmfleet_timings.py), the first host's build against the published
  build the others install. Busy time, not the role's span: under the linear strategy the
  installers wait inside that span while the builder compiles;
- the bytes the mirror served (its nginx access log), split into the apt repository and the
  bundle's other artifacts, and the download phase: the wall-clock seconds during which any
  host ran a `get_url` download that fetched something (the artifacts) or an `apt` task that
  installed something (the packages), against the same bytes at the mirror's throughput on the
  same network, measured with a plain HTTP client (a host downloading the bundle's model).

It writes a JSON document (`--json`, with every run's task timings in `<json>.timings/`)
and prints a table. It is a benchmark, not a test: it
asserts nothing about speed (tests/scenarios/test_fleet_bench.py runs it at N=2 to keep it
working). It needs what `scripts/dev.sh test` prepares: the virtual environment, Docker, the
test image and the CI bundle.

    .venv/bin/python scripts/fleet-bench.py --hosts 1,2,5,10 --json fleet-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets as random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "llmfleet.fleet-bench/1"
NETWORK_SCENARIO = "fleet-bench"  # the network is llmfleet-fleet-bench
MIRROR = "fb-mirror"
DOCKER = "community.docker.docker"
BUILD_TASK = "Build the server"  # roles/inference_engine/tasks/build.yml
# The engine's own work on each side (roles/inference_engine/tasks): the builder compiles
# and publishes, the others download, check and unpack the published build. The tasks both
# sides run (the plan, the runtime libraries, retiring old builds) are in neither.
BUILD_FILES = ("build.yml", "publish.yml")
INSTALL_FILES = ("install_published.yml",)
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)",
    re.MULTILINE,
)
# nginx's combined log format: ... "GET /path HTTP/1.1" 200 12345 ...
ACCESS = re.compile(r'"[A-Z]+ (?P<path>\S+) [^"]*" (?P<status>\d{3}) (?P<bytes>\d+)')
APT_PREFIX = "/apt/"  # the bundle's apt repositories; everything else is an artifact
DOWNLOADS = {"apt": "apt", "get_url": "artifacts"}  # a task's module: what it fetches


def tool(name: str) -> str:
    """A tool of the interpreter's own environment (the venv), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def hosts_of(count: int, prefix: str = "fb-host") -> list[str]:
    return [f"{prefix}{index}" for index in range(1, count + 1)]


def recap(output: str) -> dict[str, dict[str, int]]:
    """The play recap's counters of each host (the last recap of the output)."""
    counters: dict[str, dict[str, int]] = {}
    for match in RECAP.finditer(output):
        counters[match["host"]] = {
            key: int(value) for key, value in match.groupdict().items() if key != "host"
        }
    return counters


def served_bytes(access_log: str, kind: str | None = None) -> int:
    """Bytes of every 200/206 answer in an nginx access log (combined format); with `kind`,
    only those of the apt repositories ("apt") or of the other artifacts ("artifacts")."""
    return sum(
        int(match["bytes"])
        for match in ACCESS.finditer(access_log)
        if match["status"] in ("200", "206")
        and (kind is None or (kind == "apt") == match["path"].startswith(APT_PREFIX))
    )


def ran(timings: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    """The lines of the tasks of `role` that ran (not skipped, with a start)."""
    return [
        line
        for line in timings
        if line.get("role") == role and line.get("status") != "skipped" and line.get("start")
    ]


def role_seconds(timings: list[dict[str, Any]], role: str) -> dict[str, float]:
    """Per host: from the first start to the last end of the tasks of `role` that ran."""
    spans: dict[str, list[float]] = {}
    for line in ran(timings, role):
        span = spans.setdefault(line["host"], [line["start"], line["end"]])
        span[0] = min(span[0], line["start"])
        span[1] = max(span[1], line["end"])
    return {host: round(end - start, 1) for host, (start, end) in sorted(spans.items())}


def busy_seconds(
    timings: list[dict[str, Any]], role: str, files: tuple[str, ...] | None = None
) -> dict[str, float]:
    """Per host: the sum of the durations of the tasks of `role` that ran there (not the
    time it spent waiting for other hosts between them); with `files`, only the tasks of
    those task files of the role (e.g. "build.yml")."""
    busy: dict[str, float] = {}
    for line in ran(timings, role):
        if files is not None and str(line.get("file", "")).rsplit("/", 1)[-1] not in files:
            continue
        busy[line["host"]] = busy.get(line["host"], 0.0) + line["end"] - line["start"]
    return {host: round(seconds, 1) for host, seconds in sorted(busy.items())}


def module_of(line: dict[str, Any]) -> str:
    """The task's module without its collection: ansible.builtin.get_url -> get_url."""
    return str(line.get("action") or "").rsplit(".", 1)[-1]


def phase_seconds(timings: list[dict[str, Any]], module: str) -> float:
    """Wall-clock seconds during which any host ran a task of `module` that changed
    something (a download that fetched, an install that installed): the union of those
    tasks' intervals across the hosts."""
    intervals = sorted(
        (line["start"], line["end"])
        for line in timings
        if module_of(line) == module and line.get("status") == "changed" and line.get("start")
    )
    total, reach = 0.0, float("-inf")
    for start, end in intervals:
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return round(total, 1)


def read_timings(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def inventory(
    hosts: list[str],
    bundle: Path,
    key_sha256: str,
    secrets: Path,
    connection: str,
    mirror: str = MIRROR,
) -> dict[str, Any]:
    """The benchmark's inventory: a mirror and the fleet hosts, over `docker exec`."""
    return {
        "all": {
            "vars": {
                "ansible_connection": connection,
                "ansible_python_interpreter": "/usr/bin/python3",
                "llmfleet_airgapped": True,
                "llmfleet_mirror_url": f"http://{mirror}",
                "llmfleet_bundle_key_sha256": key_sha256,
                "llmfleet_api_key": (secrets / "api-key").read_text().strip(),
                "llmfleet_metrics_password": (secrets / "metrics-password").read_text().strip(),
                "inference_service_context_cap": 2048,
                "container_runtime_enabled": False,
            },
            "children": {
                "mirror": {"hosts": {mirror: {"offline_mirror_bundle_src": str(bundle)}}},
                "fleet": {"hosts": {host: {} for host in hosts}},
            },
        }
    }


class Bench:
    """One N: containers up, two runs measured, containers down.

    `mirror`, `host_prefix` and `scenario` name the containers and the network
    (llmfleet-<scenario>), so another benchmark can run its own set of them.
    """

    def __init__(
        self,
        count: int,
        work: Path,
        bundle: Path,
        cache: Path,
        keep: bool,
        *,
        mirror: str = MIRROR,
        host_prefix: str = "fb-host",
        scenario: str = NETWORK_SCENARIO,
    ) -> None:
        self.count = count
        self.mirror = mirror
        self.hosts = hosts_of(count, host_prefix)
        self.work = work
        self.bundle = bundle
        self.cache = cache
        self.keep = keep
        self.env = {
            **os.environ,
            "MOLECULE_SCENARIO_NAME": scenario,
            "LLMFLEET_TEST_IMAGE": os.environ.get(
                "LLMFLEET_TEST_IMAGE", "llmfleet/debian12-systemd:latest"
            ),
            "LLMFLEET_CACHE": str(cache),
            "ANSIBLE_PIPELINING": "true",
            "ANSIBLE_CALLBACK_PLUGINS": str(REPO / "scripts" / "callback_plugins"),
            "ANSIBLE_CALLBACKS_ENABLED": "llmfleet_timings",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(work / "facts"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }

    def platforms(self) -> dict[str, Any]:
        ccache = f"{self.cache}/ccache:/var/cache/llmfleet/ccache"
        platforms = [{"name": self.mirror}] + [
            {"name": host, "volumes": [ccache]} for host in self.hosts
        ]
        return {"molecule_yml": {"platforms": platforms}}

    def playbook(self, path: Path, *args: str, inventory_path: Path | None = None) -> str:
        command = [tool("ansible-playbook"), "-i", str(inventory_path or "localhost,")]
        command += [*args, str(path)]
        result = subprocess.run(
            command, cwd=REPO, env=self.env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
            )
        return result.stdout

    def docker(self, *args: str) -> str:
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout

    def access_log(self) -> str:
        """The mirror's nginx access log; empty before the first rollout installs nginx."""
        return subprocess.run(
            ["docker", "exec", self.mirror, "cat", "/var/log/nginx/access.log"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    def up(self) -> Path:
        extra = self.work / "platforms.json"
        extra.write_text(json.dumps(self.platforms()))
        self.down()
        self.playbook(REPO / "molecule/resources/create.yml", "-e", f"@{extra}")
        path = self.inventory_file(DOCKER)
        self.playbook(REPO / "molecule/resources/no-route-out.yml", inventory_path=path)
        return path

    def inventory_file(self, connection: str) -> Path:
        manifest = json.loads((self.bundle / "manifest.json").read_text())
        path = self.work / f"inventory-{connection.replace('.', '-')}.json"
        key = manifest["signing_key"]["sha256"]
        secrets = self.cache / "fleet-bench"
        document = inventory(self.hosts, self.bundle, key, secrets, connection, self.mirror)
        path.write_text(json.dumps(document))
        return path

    def run_mitogen(self, name: str) -> dict[str, Any]:
        """The same run with Mitogen's strategy (the opt-in of README's "Faster runs").

        Mitogen takes over the connections it knows by their short names: the
        inventory names `docker` (which ansible-core routes to community.docker.docker).
        """
        import ansible_mitogen

        strategies = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
        saved = dict(self.env)
        self.env.update(ANSIBLE_STRATEGY_PLUGINS=str(strategies), ANSIBLE_STRATEGY="mitogen_linear")
        try:
            return self.run(self.inventory_file("docker"), name)
        finally:
            self.env = saved

    def down(self) -> None:
        extra = self.work / "platforms.json"
        self.playbook(REPO / "molecule/resources/destroy.yml", "-e", f"@{extra}")

    def run(self, inventory_path: Path, name: str) -> dict[str, Any]:
        timings = self.work / f"timings-{name}.jsonl"
        timings.unlink(missing_ok=True)
        self.env["LLMFLEET_TIMINGS_FILE"] = str(timings)
        log_before = len(self.access_log())
        cpu_before = os.times()
        started = time.monotonic()
        output = self.playbook(REPO / "site.yml", inventory_path=inventory_path)
        wall = time.monotonic() - started
        cpu_after = os.times()
        cpu = (cpu_after.children_user - cpu_before.children_user) + (
            cpu_after.children_system - cpu_before.children_system
        )
        access = self.access_log()[log_before:]
        counters = recap(output)
        lines = read_timings(timings)
        return {
            "wall_s": round(wall, 1),
            "control_cpu_s": round(cpu, 1),
            "control_cpu_s_per_host": round(cpu / self.count, 2),
            "tasks": {
                host: {
                    "run": c["ok"] + c["failed"],
                    "changed": c["changed"],
                    "skipped": c["skipped"],
                    "failed": c["failed"],
                }
                for host, c in counters.items()
                if host in self.hosts
            },
            "engine_s": role_seconds(lines, "inference_engine"),
            "engine_busy_s": busy_seconds(lines, "inference_engine"),
            "engine_build_s": busy_seconds(lines, "inference_engine", BUILD_FILES),
            "engine_install_s": busy_seconds(lines, "inference_engine", INSTALL_FILES),
            "engine_built_on": sorted(builders(lines)),
            "mirror_bytes_served": served_bytes(access),
            "downloads": {
                kind: {
                    "bytes": served_bytes(access, kind),
                    "phase_s": phase_seconds(lines, module),
                }
                for module, kind in DOWNLOADS.items()
            },
        }

    def mirror_throughput(self) -> dict[str, Any]:
        """A host downloads the bundle's model from the mirror three times: the best MB/s."""
        manifest = json.loads((self.bundle / "manifest.json").read_text())
        model = next(a for a in manifest["artifacts"] if a["name"].startswith("model-"))
        url = f"http://{self.mirror}/{model['path']}"
        script = (
            "import sys, time, urllib.request\n"
            "best = 0.0\n"
            "for _ in range(3):\n"
            "    start = time.monotonic(); size = 0\n"
            "    with urllib.request.urlopen(sys.argv[1]) as response:\n"
            "        while chunk := response.read(1 << 20):\n"
            "            size += len(chunk)\n"
            "    best = max(best, size / (time.monotonic() - start))\n"
            "print(size, best)\n"
        )
        size, rate = self.docker("exec", self.hosts[0], "python3", "-c", script, url).split()
        return {"url": url, "bytes": int(size), "bytes_per_s": round(float(rate))}


def builders(timings: list[dict[str, Any]]) -> set[str]:
    """The hosts that compiled the engine (its cmake build task changed), not installed it."""
    return {
        line["host"]
        for line in timings
        if line.get("role") == "inference_engine"
        # the callback's task names carry the role ("inference_engine : Build the server ...")
        and line.get("task", "").split(" : ", 1)[-1].startswith(BUILD_TASK)
        and line.get("status") == "changed"
    }


def summarize(
    count: int,
    first: dict[str, Any],
    noop: dict[str, Any],
    mirror: dict[str, Any],
    noop_mitogen: dict[str, Any] | None = None,
) -> dict[str, Any]:
    built_on = first["engine_built_on"]
    built = [first["engine_build_s"][host] for host in built_on if host in first["engine_build_s"]]
    installs = sorted(
        value for host, value in first["engine_install_s"].items() if host not in built_on
    )
    builder_s = max(built, default=0.0)
    rate = mirror["bytes_per_s"]
    download_s = first["mirror_bytes_served"] / rate if rate else None
    downloads = {
        kind: {
            **phase,
            "at_mirror_limit_s": round(phase["bytes"] / rate, 2) if rate else None,
            "ratio_to_limit": (
                round(phase["phase_s"] / (phase["bytes"] / rate), 1)
                if rate and phase["bytes"]
                else None
            ),
        }
        for kind, phase in first.get("downloads", {}).items()
    }
    return {
        "hosts": count,
        "first_rollout": first,
        "noop": noop,
        "noop_mitogen": noop_mitogen,
        "noop_mitogen_ratio": (
            round(noop_mitogen["wall_s"] / noop["wall_s"], 2) if noop_mitogen else None
        ),
        "mirror_throughput": mirror,
        "engine_build_s": builder_s,
        "engine_install_s_others": installs,
        "engine_install_fraction": (
            round(max(installs) / builder_s, 3) if installs and builder_s else None
        ),
        "download_at_mirror_limit_s": None if download_s is None else round(download_s, 1),
        "downloads": downloads,
    }


def phase(result: dict[str, Any], kind: str) -> str:
    """A download phase's seconds, and the same bytes at the mirror's limit: "12.3 (0.05)"."""
    download = result.get("downloads", {}).get(kind)
    if not download:
        return "-"
    return f"{download['phase_s']:g} ({download['at_mirror_limit_s']:g})"


def table(results: list[dict[str, Any]]) -> str:
    columns = (
        "N",
        "rollout s",
        "no-op s",
        "Mitogen no-op s",
        "CPU s/host (no-op)",
        "tasks/host (no-op)",
        "engine build s",
        "install s (2..N)",
        "served MB",
        "mirror MB/s",
        "artifacts s (at limit)",
        "apt s (at limit)",
    )
    rows = []
    for r in results:
        noop_tasks = sorted({t["run"] for t in r["noop"]["tasks"].values()})
        rows.append(
            (
                str(r["hosts"]),
                f"{r['first_rollout']['wall_s']:g}",
                f"{r['noop']['wall_s']:g}",
                f"{r['noop_mitogen']['wall_s']:g}" if r["noop_mitogen"] else "-",
                f"{r['noop']['control_cpu_s_per_host']:g}",
                "/".join(map(str, noop_tasks)),
                f"{r['engine_build_s']:g}",
                f"{max(r['engine_install_s_others']):g}" if r["engine_install_s_others"] else "-",
                f"{r['first_rollout']['mirror_bytes_served'] / 1e6:.0f}",
                f"{r['mirror_throughput']['bytes_per_s'] / 1e6:.0f}",
                phase(r, "artifacts"),
                phase(r, "apt"),
            )
        )
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def secrets(cache: Path) -> None:
    """The benchmark's own API key and metrics password, made once (mode 0600)."""
    folder = cache / "fleet-bench"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("api-key", "metrics-password"):
        path = folder / name
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(random.token_urlsafe(24) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="1,2,5,10", help="fleet sizes, e.g. 1,2,5,10")
    parser.add_argument("--json", type=Path, help="write the document here")
    parser.add_argument("--keep", action="store_true", help="leave the last N's containers up")
    parser.add_argument(
        "--mitogen", action="store_true", help="also a no-op run with Mitogen's strategy"
    )
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.hosts.split(",") if n.strip()]
    cache = Path(os.environ.get("LLMFLEET_CACHE", "/var/cache/llmfleet"))
    bundle = Path(
        subprocess.run(
            [str(REPO / "scripts/ci-bundle.sh")],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "LLMFLEET_CACHE": str(cache)},
        ).stdout.strip()
    )
    secrets(cache)
    results = []
    with tempfile.TemporaryDirectory(prefix="llmfleet-fleet-bench-") as folder:
        for count in sizes:
            work = Path(folder) / f"n{count}"
            work.mkdir()
            bench = Bench(count, work, bundle, cache, args.keep)
            print(f"== N={count}: starting a mirror and {count} hosts", file=sys.stderr, flush=True)
            inventory_path = bench.up()
            try:
                first = bench.run(inventory_path, "rollout")
                print(f"   first rollout {first['wall_s']} s", file=sys.stderr, flush=True)
                noop = bench.run(inventory_path, "noop")
                print(f"   no-op run {noop['wall_s']} s", file=sys.stderr, flush=True)
                noop_mitogen = bench.run_mitogen("noop-mitogen") if args.mitogen else None
                if noop_mitogen:
                    print(
                        f"   Mitogen no-op {noop_mitogen['wall_s']} s", file=sys.stderr, flush=True
                    )
                mirror = bench.mirror_throughput()
                results.append(summarize(count, first, noop, mirror, noop_mitogen))
                if args.json:  # each run's task timings beside the document, to look into
                    kept = args.json.with_name(args.json.name + ".timings")
                    kept.mkdir(exist_ok=True)
                    for timings in work.glob("timings-*.jsonl"):
                        shutil.copy(timings, kept / f"n{count}-{timings.name}")
            finally:
                if not (args.keep and count == sizes[-1]):
                    bench.down()
    document = {"schema": SCHEMA, "cpus": os.cpu_count(), "results": results}
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
