#!/usr/bin/env python3
"""The service against a hand-tuned llama-server on the same host, build and model.

Answers "does the tuned service serve as fast as an expert's own command line?" (issue 14:
at least 0.95 of the hand-tuned aggregate tokens/s at each concurrency, TTFT p50 at most
1.5x). On the host it:

1. reads the active color's running llama-server (its binary, command line and user, from
   the blue_green fact and /proc), the model file and the API key file it uses;
2. starts one hand-tuned llama-server per ``--hand`` command line, with the same binary and
   model, as the same user, on loopback ports from ``--hand-port``; in a command line,
   ``{c}`` is the level's concurrency, ``{cores}`` the physical cores, ``{cpus}`` the CPUs
   and ``{ctx}`` the service's --ctx-size; ``--model``, ``--host``, ``--port``,
   ``--api-key-file`` and ``--metrics`` are added as the service has them;
3. per concurrency level, runs llmfleet's benchmark (``llmfleet.bench.run_benchmark``, the
   code behind ``llmfleet bench``, schema ``llmfleet.bench/2``) against each target in turn,
   ``--rounds`` times, the order rotated every round (A/B/C, B/C/A, ...), with the same
   prompts and output length for all: the service through its front door (the API key),
   the service's engine port, and each hand-tuned server;
4. reports per level the median over the rounds of each target's aggregate output tokens/s
   and TTFT/TPOT p50, and the service's ratios to the best hand-tuned server.

From the control node (the bench modules and this script are copied to the host with
``--exec``'s command, results come back under ``--output``):

    .venv/bin/python scripts/compare-hand-tuned.py --output /tmp/compare \\
        [--exec 'docker exec -i llmfleet-local'] [--concurrency 1,4,8] [--rounds 5] \\
        [--requests 32] [--input-tokens 128] [--output-tokens 64] \\
        [--hand '--threads {cores} --threads-batch {cpus} --parallel {c} ...' ...] \\
        [--targets door,engine,hand]

It needs a host that serves (site.yml has run: the blue_green fact, the front door), root
on it, and python3; it prints progress on stderr and the table on stdout, and writes
summary.json and every run's llmfleet.bench/2 document under --output. The machine should
be otherwise quiet: the client runs on the host, beside the servers, for every target alike.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

#: The hand-tuned command line an expert starts from on a CPU host (every flag explicit).
DEFAULT_HAND = (
    "--ctx-size {ctx} --threads {cores} --threads-batch {cpus} --parallel {c} --kv-unified "
    "--cont-batching --batch-size 2048 --ubatch-size 512 --flash-attn on"
)
#: llmfleet's benchmark: standard library only, copied to the host beside this script.
BENCH_MODULES = ("__init__.py", "bench.py", "bench_stats.py", "bench_prompts.py", "report.py")
HOST_DIR = "/tmp/llmfleet-compare"
BLUE_GREEN_FACT = Path("/etc/ansible/facts.d/blue_green.fact")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--exec", default="docker exec -i llmfleet-local", help="run on the host")
    parser.add_argument("--output", default="compare-hand-tuned", help="results folder (here)")
    parser.add_argument("--concurrency", default="1,4,8", help="levels, comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each target per level")
    parser.add_argument("--requests", type=int, default=32, help="requests per run")
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--hand",
        action="append",
        help=f"a hand-tuned command line, repeatable (default: {DEFAULT_HAND})",
    )
    parser.add_argument("--hand-port", type=int, default=8090, help="the first one's port")
    parser.add_argument("--door", default="http://127.0.0.1:8080", help="the front door")
    parser.add_argument(
        "--targets", default="door,engine,hand", help="which of door, engine, hand to measure"
    )
    parser.add_argument("--on-host", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- on the control node --------------------------------------------------------------------------


def stage(command: list[str]) -> None:
    """Copy this script and llmfleet's benchmark to HOST_DIR on the host."""
    repo = Path(__file__).resolve().parent.parent
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(Path(__file__).resolve(), arcname="compare-hand-tuned.py")
        for name in BENCH_MODULES:
            archive.add(repo / "src" / "llmfleet" / name, arcname=f"lib/llmfleet/{name}")
    script = f"rm -rf {HOST_DIR} && mkdir -p {HOST_DIR} && tar -C {HOST_DIR} -xf -"
    subprocess.run([*command, "sh", "-c", script], input=buffer.getvalue(), check=True)


def control_main(args: argparse.Namespace, argv: list[str]) -> int:
    command = shlex.split(args.exec)
    stage(command)
    passed = [a for a in argv if a != "--on-host"]
    run = subprocess.run(
        [*command, "python3", f"{HOST_DIR}/compare-hand-tuned.py", "--on-host", *passed],
        check=False,
    )
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    fetched = subprocess.run(
        [*command, "tar", "-C", f"{HOST_DIR}/out", "-cf", "-", "."],
        capture_output=True,
        check=False,
    )
    if fetched.returncode == 0:
        with tarfile.open(fileobj=io.BytesIO(fetched.stdout)) as archive:
            archive.extractall(output, filter="data")
        print(f"results: {output}/summary.json and runs/", file=sys.stderr)
    return run.returncode


# -- on the host ----------------------------------------------------------------------------------


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def physical_cores() -> int:
    """Distinct (package, core) pairs, at most the CPUs this process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    pairs = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            package, core = "0", str(cpu)
        pairs.add((package, core))
    return max(1, min(len(pairs), len(cpus)))


def option(argv: list[str], *names: str) -> str | None:
    for index, word in enumerate(argv[:-1]):
        if word in names:
            return argv[index + 1]
    return None


def executable(pid: int, argv: list[str]) -> str:
    """The binary a process runs: /proc/<pid>/exe, or its absolute argv[0] where the link
    cannot be read (the engine unit's PrivateUsers= puts it in a user namespace that root in
    a container without CAP_SYS_PTRACE may not inspect)."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except PermissionError:
        if argv and os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK):
            return argv[0]
        raise SystemExit(f"cannot tell which binary process {pid} runs ({argv[:1]})") from None


def service_engine() -> dict[str, Any]:
    """The active color's running llama-server: binary, argv, user, port, model, key file."""
    fact = json.loads(BLUE_GREEN_FACT.read_text())
    color = fact["active"]
    unit = f"llmfleet-engine@{color}"
    shown = subprocess.run(
        ["systemctl", "show", "-p", "MainPID", "-p", "User", "--value", unit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pid = int(shown[0])
    if pid == 0:
        raise SystemExit(f"{unit} is not running")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    return {
        "color": color,
        "unit": unit,
        "build": fact.get("colors", {}).get(color, {}).get("build"),
        "exe": executable(pid, argv),
        "argv": argv,
        "user": shown[1] if len(shown) > 1 else "root",
        "port": int(option(argv, "--port") or 0),
        "model": option(argv, "--model", "-m"),
        "ctx": option(argv, "--ctx-size", "-c") or "4096",
        "key_file": option(argv, "--api-key-file"),
    }


def wait_healthy(port: int, process: subprocess.Popen[bytes], limit_s: float = 180) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the hand-tuned server on :{port} exited ({process.returncode})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"the hand-tuned server on :{port} was not healthy within {limit_s:g} s")


def start_hand(
    engine: dict[str, Any], template: str, values: dict[str, Any], port: int, log: Path
) -> tuple[subprocess.Popen[bytes], list[str]]:
    flags = shlex.split(template.format(**values))
    argv = [engine["exe"], "--model", engine["model"], "--host", "127.0.0.1", "--port", str(port)]
    argv += flags
    if engine["key_file"]:
        argv += ["--api-key-file", engine["key_file"]]
    argv.append("--metrics")
    user = engine["user"]
    runner = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    runner = runner if user != "root" else []
    with log.open("ab") as sink:
        process = subprocess.Popen([*runner, *argv], stdout=sink, stderr=subprocess.STDOUT)
    wait_healthy(port, process)
    return process, argv


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def figures(level: dict[str, Any]) -> dict[str, Any]:
    def p50(metric: str) -> float | None:
        value = (level.get(metric) or {}).get("p50")
        return None if value is None else round(value * 1000, 1)

    return {
        "output_tokens_per_s": level["throughput"]["output_tokens_per_s"],
        "ttft_p50_ms": p50("ttft_s"),
        "tpot_p50_ms": p50("tpot_s"),
        "succeeded": level["succeeded"],
        "failed": level["failed"],
        "flagged": bool((level.get("server_metrics") or {}).get("flagged")),
    }


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def host_main(args: argparse.Namespace) -> int:
    sys.path.insert(0, f"{HOST_DIR}/lib")
    from llmfleet.bench import BenchConfig, Level, run_benchmark

    out = Path(HOST_DIR) / "out"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    engine = service_engine()
    key = Path(engine["key_file"]).read_text().strip() if engine["key_file"] else None
    levels = [int(c) for c in args.concurrency.split(",")]
    hands = args.hand or [DEFAULT_HAND]
    wanted = set(args.targets.split(","))
    targets = []
    if "door" in wanted:
        targets.append(("service, front door", args.door))
    if "engine" in wanted:
        targets.append(("service, engine", f"http://127.0.0.1:{engine['port']}"))
    hand_names = [
        f"hand-tuned {i + 1}" if len(hands) > 1 else "hand-tuned" for i in range(len(hands))
    ]
    if "hand" in wanted:
        targets += [
            (name, f"http://127.0.0.1:{args.hand_port + i}") for i, name in enumerate(hand_names)
        ]
    values = {"cores": physical_cores(), "cpus": len(os.sched_getaffinity(0)), "ctx": engine["ctx"]}
    say(f"service: {engine['unit']} ({engine['build']}), {shlex.join(engine['argv'])}")
    summary: dict[str, Any] = {
        "service": engine,
        "hand_templates": hands,
        "hand_command_lines": {},
        "settings": {
            k: getattr(args, k)
            for k in ("rounds", "requests", "input_tokens", "output_tokens", "seed")
        },
        "levels": {},
    }
    for c in levels:
        processes = []
        try:
            if "hand" in wanted:
                for i, template in enumerate(hands):
                    port = args.hand_port + i
                    process, argv = start_hand(
                        engine, template, {**values, "c": c}, port, out / f"hand-{i + 1}.log"
                    )
                    processes.append(process)
                    summary["hand_command_lines"].setdefault(hand_names[i], {})[str(c)] = (
                        shlex.join(argv)
                    )
                    say(f"c={c}: {hand_names[i]} on :{port}: {shlex.join(argv)}")
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in targets}
            for round_ in range(args.rounds):
                shift = round_ % len(targets)
                for name, endpoint in targets[shift:] + targets[:shift]:
                    config = BenchConfig(
                        endpoint=endpoint,
                        levels=(Level(concurrency=c),),
                        requests=args.requests,
                        input_tokens=args.input_tokens,
                        output_tokens=args.output_tokens,
                        seed=args.seed,
                        api_key=key,
                    )
                    load = os.getloadavg()[0]
                    document = run_benchmark(config)
                    slug = name.replace(", ", "-").replace(" ", "-")
                    path = out / "runs" / f"c{c}-r{round_ + 1}-{slug}.json"
                    path.write_text(json.dumps(document, indent=1))
                    row = {**figures(document["levels"][0]), "loadavg_before": round(load, 2)}
                    runs[name].append(row)
                    say(
                        f"c={c} round {round_ + 1} {name}: {row['output_tokens_per_s']} tok/s, "
                        f"TTFT p50 {row['ttft_p50_ms']} ms, failed {row['failed']}"
                    )
        finally:
            for process in processes:
                stop(process)
        level: dict[str, Any] = {"targets": {}}
        for name, rows in runs.items():
            level["targets"][name] = {
                "output_tokens_per_s": median([r["output_tokens_per_s"] for r in rows]),
                "ttft_p50_ms": median([r["ttft_p50_ms"] for r in rows]),
                "tpot_p50_ms": median([r["tpot_p50_ms"] for r in rows]),
                "failed": sum(r["failed"] for r in rows),
                "runs": rows,
            }
        measured = level["targets"]
        best = max(
            (n for n in hand_names if n in measured),
            key=lambda n: measured[n]["output_tokens_per_s"] or 0,
            default=None,
        )
        level["best_hand"] = best
        for name in ("service, front door", "service, engine"):
            if best and name in measured:
                level[f"{name}: tokens/s ratio"] = ratio(
                    measured[name]["output_tokens_per_s"], measured[best]["output_tokens_per_s"]
                )
                level[f"{name}: TTFT p50 ratio"] = ratio(
                    measured[name]["ttft_p50_ms"], measured[best]["ttft_p50_ms"]
                )
        summary["levels"][str(c)] = level
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(table(summary))
    return 0


def table(summary: dict[str, Any]) -> str:
    lines = [
        "| c | target | output tok/s (median) | TTFT p50 ms | TPOT p50 ms | failed | "
        "tok/s vs best hand | TTFT vs best hand |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c, level in summary["levels"].items():
        for name, row in level["targets"].items():
            tokens = level.get(f"{name}: tokens/s ratio", "")
            ttft = level.get(f"{name}: TTFT p50 ratio", "")
            mark = " (best)" if name == level["best_hand"] else ""
            lines.append(
                f"| {c} | {name}{mark} | {row['output_tokens_per_s']} | {row['ttft_p50_ms']} | "
                f"{row['tpot_p50_ms']} | {row['failed']} | {tokens} | {ttft} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    return host_main(args) if args.on_host else control_main(args, argv)


if __name__ == "__main__":
    sys.exit(main())
