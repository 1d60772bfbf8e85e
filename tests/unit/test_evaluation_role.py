"""The hardware_eval role's wiring: the GPU sampler script, the stage being opt-in, the tools in
the bundle, and the places the result format (notes: schema llmfleet.hwevaluation/1) fixes."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import load_module_file

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "hardware_eval"
SAMPLER = ROLE / "files" / "llmfleet-gpu-sample"
PLUGIN = REPO / "plugins" / "filter" / "llmfleet_evaluation.py"
ev = load_module_file("llmfleet_evaluation_filters", PLUGIN)


def load(path: Path) -> object:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture
def fake_smi(tmp_path: Path) -> Path:
    """An nvidia-smi that prints one row for each of two GPUs every 0.05 s until it is stopped,
    and records its arguments."""
    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path}/args\n'
        "while true; do\n"
        '  echo "0, 97, 1234, 81920, 60, 250.12, 1410"\n'
        '  echo "1, 95, 1200, 81920, 62, 248.00, 1395"\n'
        "  sleep 0.05\n"
        "done\n"
    )
    script.chmod(0o755)
    return script


def test_the_sampler_samples_while_the_command_runs(tmp_path: Path, fake_smi: Path) -> None:
    samples = tmp_path / "samples.csv"
    result = subprocess.run(
        [
            str(SAMPLER),
            str(samples),
            "50",
            str(fake_smi),
            "--",
            "sh",
            "-c",
            "sleep 0.5; echo '[{\"avg_ts\": 1}]'; exit 3",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # the command's output and exit status are the script's own
    assert (result.returncode, result.stdout) == (3, '[{"avg_ts": 1}]\n')
    args = (tmp_path / "args").read_text().split()
    assert args == [
        "--query-gpu=" + ",".join(ev.SAMPLE_FIELDS),
        "--format=csv,noheader,nounits",
        "-lms",
        "50",
    ]
    parsed = ev.parse_gpu_samples(samples.read_text(), 50)
    assert len(parsed) >= 4
    assert {s["gpu"] for s in parsed} == {0, 1}
    assert (samples.parent / "samples.csv.err").exists()


def test_the_sampler_takes_a_command_line_for_nvidia_smi(tmp_path: Path, fake_smi: Path) -> None:
    samples = tmp_path / "samples.csv"
    subprocess.run(
        [str(SAMPLER), str(samples), "50", f"{fake_smi} --capture x.xml", "--", "sleep", "0.3"],
        check=True,
        timeout=30,
    )
    assert (tmp_path / "args").read_text().startswith("--capture x.xml --query-gpu=")


def test_the_sampler_refuses_a_bad_command_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(SAMPLER), "x", "1000", "nvidia-smi", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "usage:" in result.stderr


def test_the_sampler_is_executable() -> None:
    assert os.access(SAMPLER, os.X_OK)


def test_the_stage_is_opt_in() -> None:
    """site.yml's stages never import evaluate.yml; it is its own playbook on the fleet."""
    for path in (REPO / "site.yml", REPO / "playbooks" / "site.yml"):
        assert "evaluate" not in path.read_text(encoding="utf-8")
    (play,) = load(REPO / "playbooks" / "evaluate.yml")
    assert play["hosts"] == "fleet"
    assert [r["role"] for r in play["roles"]] == ["hardware_eval"]


def test_the_bundle_carries_the_memory_benchmarks() -> None:
    bundle = load(REPO / "bundles" / "ci.yml")
    packages = {p for repo in bundle["apt"] for p in repo["packages"]}
    defaults = load(ROLE / "defaults" / "main.yml")
    assert set(defaults["hardware_eval_packages"]) <= packages


def test_the_places_the_format_fixes() -> None:
    internal = load(ROLE / "vars" / "main.yml")
    defaults = load(ROLE / "defaults" / "main.yml")
    assert internal["__hardware_eval_fact_file"] == "/etc/ansible/facts.d/hardware_eval.fact"
    assert defaults["hardware_eval_dir"] == "/var/lib/llmfleet/evaluation"
    assert internal["__hardware_eval_result_file"] == "{{ hardware_eval_dir }}/evaluation.json"
    assert defaults["hardware_eval_controller_dir"] == "{{ role_path }}/../../.cache/evaluation"


def test_the_fact_has_one_writer() -> None:
    """Only this role's record.yml writes hardware_eval.fact."""
    writers = [
        path.relative_to(REPO).as_posix()
        for path in REPO.glob("roles/*/tasks/*.yml")
        if "hardware_eval.fact" in path.read_text(encoding="utf-8")
        or "__hardware_eval_fact_file" in path.read_text(encoding="utf-8")
    ]
    assert writers == ["roles/hardware_eval/tasks/record.yml"]


def test_the_measurements_only_run_when_the_key_changed() -> None:
    (measure, *_), report = (
        load(ROLE / "tasks" / "main.yml")[1:],
        load(ROLE / "tasks" / "report.yml"),
    )
    assert measure["ansible.builtin.include_tasks"] == "measure.yml"
    assert "hardware_eval_measured | bool" in measure["when"]
    # what runs on every pass only reads, or fetches what did not change
    modules = {next(k for k in task if k.startswith("ansible.")) for task in report}
    assert modules == {"ansible.builtin.debug", "ansible.builtin.fetch", "ansible.builtin.assert"}


def test_the_cuda_program_checks_every_call() -> None:
    source = (ROLE / "files" / "llmfleet-gpu-bandwidth.cu").read_text(encoding="utf-8")
    calls = re.findall(r"\b(cuda[A-Z]\w*)\(", source)
    unchecked = [
        line.strip()
        for line in source.splitlines()
        if re.search(r"\bcuda[A-Z]\w*\(", line)
        and not re.search(
            r"CHECK\(|check\(|cudaGetErrorString|cudaGetErrorName|cudaGetLastError"
            r"|const cudaError_t status = cudaDeviceEnablePeerAccess",
            line,
        )
    ]
    assert {
        "cudaMemcpyAsync",
        "cudaEventElapsedTime",
        "cudaMallocHost",
        "cudaMemcpyPeerAsync",
        "cudaDeviceCanAccessPeer",
        "cudaDeviceEnablePeerAccess",
    } <= set(calls)
    assert unchecked == []
