"""roles/node_metrics/files/llmfleet-gpu-metrics: nvidia-smi to DCGM-named textfile metrics.

The script is loaded from its path (it has no .py suffix). nvidia-smi is the
test double in tests/doubles, which answers the script's own --query-gpu field
list from a CSV capture (tests/captures/*.csv, or the real captures of many GPUs
in ../shared/fixtures/nvidia-smi when that folder is present).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FILES = REPO_ROOT / "roles" / "node_metrics" / "files"
SCRIPT = FILES / "llmfleet-gpu-metrics"
DOUBLE = REPO_ROOT / "tests" / "doubles" / "nvidia-smi"
CAPTURES = REPO_ROOT / "tests" / "captures"
SHARED = Path(
    os.environ.get("LLMFLEET_SHARED_FIXTURES")
    or REPO_ROOT.parent / "shared" / "fixtures" / "nvidia-smi"
)
DCGM_NAMES = {
    "DCGM_FI_DEV_GPU_UTIL": "utilization.gpu",
    "DCGM_FI_DEV_FB_USED": "memory.used",
    "DCGM_FI_DEV_FB_FREE": "memory.free",
    "DCGM_FI_DEV_GPU_TEMP": "temperature.gpu",
    "DCGM_FI_DEV_POWER_USAGE": "power.draw",
}


def _load_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("llmfleet_gpu_metrics", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


m = _load_script()

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a Prometheus text file; checks every sample has HELP and TYPE before it."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    typed: set[str] = set()
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind == "gauge", line
            typed.add(name)
            continue
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        assert name in typed and name in helped, f"{name} has no HELP/TYPE before it"
        pairs = _LABEL.findall(labels or "")
        assert ",".join(f'{k}="{v}"' for k, v in pairs) == (labels or ""), line
        key = (name, frozenset((k, v.replace('\\"', '"').replace("\\\\", "\\")) for k, v in pairs))
        assert key not in out, f"duplicate series {line!r}"
        out[key] = float(value)
    return out


def gpu_series(parsed: dict) -> dict[tuple[str, str], float]:
    """(metric, gpu index) -> value, for the DCGM series only."""
    return {(name, dict(labels)["gpu"]): v for (name, labels), v in parsed.items() if labels}


def answer(capture: Path, command: list[str] | None = None) -> subprocess.CompletedProcess:
    """What the nvidia-smi double prints for the script's query, replaying `capture`."""
    env = {**os.environ, "NVIDIA_SMI_DOUBLE_CSV": str(capture)}
    return subprocess.run(
        command or m.query_command(str(DOUBLE)),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def run_script(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--output-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=60,
    )


# --- parsing --------------------------------------------------------------------------------


def test_query_asks_nvidia_smi_for_the_documented_fields() -> None:
    assert m.query_command("/usr/bin/nvidia-smi") == [
        "/usr/bin/nvidia-smi",
        "--query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.free,"
        "temperature.gpu,power.draw",
        "--format=csv,noheader,nounits",
    ]


def gpu(index: str, uuid: str, name: str, values: tuple[float, ...]) -> m.Gpu:
    """A GPU with a value for each of the query's value fields, in the query's order (the
    order of DCGM_NAMES)."""
    return m.Gpu(index, uuid, name, dict(zip(DCGM_NAMES.values(), values, strict=True)))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            CAPTURES / "rtx-3060.csv",
            gpu(
                "0",
                "GPU-3c0f6a1e-52d4-4b7e-9a10-6f2d8e4b7a31",
                "NVIDIA GeForce RTX 3060",
                (7, 612, 11406, 41, 18.52),
            ),
            id="rtx-3060 capture through the double",
        ),
        pytest.param(
            "3, GPU-c, NVIDIA A100, PCIe, 40GB, 5, 10, 20, 30, 40.5\n",
            gpu("3", "GPU-c", "NVIDIA A100, PCIe, 40GB", (5, 10, 20, 30, 40.5)),
            id="a name with a comma keeps its columns",
        ),
    ],
)
def test_parse_one_gpu(source: Path | str, expected: m.Gpu) -> None:
    """From a capture the double replays (a path), or from nvidia-smi's answer as given."""
    if isinstance(source, Path):
        done = answer(source)
        assert done.returncode == 0, done.stdout
        source = done.stdout
    assert m.parse_query_csv(source) == [expected]


def test_parse_two_gpus_in_order() -> None:
    gpus = m.parse_query_csv(answer(CAPTURES / "dual-a5000-narrow.csv").stdout)
    assert [(g.index, g.uuid[-2:], g.name) for g in gpus] == [
        ("0", "01", "NVIDIA RTX A5000"),
        ("1", "02", "NVIDIA RTX A5000"),
    ]
    assert [g.values["power.draw"] for g in gpus] == [24.11, 21.87]
    assert [g.values["utilization.gpu"] for g in gpus] == [3, 0]
    assert [g.values["temperature.gpu"] for g in gpus] == [38, 36]


def test_mig_gpu_utilization_not_available_is_left_out() -> None:
    (gpu,) = m.parse_query_csv(answer(CAPTURES / "a100-mig.csv").stdout)
    assert "utilization.gpu" not in gpu.values
    assert gpu.values == {
        "memory.used": 0,
        "memory.free": 40326,
        "temperature.gpu": 31,
        "power.draw": 56.14,
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("56.14", 56.14),
        (" 0 ", 0.0),
        ("612 MiB", 612.0),
        ("7 %", 7.0),
        ("[N/A]", None),
        ("N/A", None),
        ("[Not Supported]", None),
        ("[Not", None),  # "[Not Supported]" cut at its space, as the double's nounits does
        ("[Unknown Error]", None),
        ("[Requested functionality has been deprecated]", None),
        ("nan", None),
        ("inf", None),
        ("", None),
    ],
)
def test_parse_value(text: str, value: float | None) -> None:
    assert m.parse_value(text) == value


def test_every_kind_of_unavailable_value_is_omitted_per_gpu() -> None:
    text = (
        "0, GPU-aaa, Tesla T4, [N/A], 100, 14917, [Not Supported], 9.31\n"
        "1, GPU-bbb, Tesla T4, 12, [Unknown Error], N/A, 50, [N/A]\n"
    )
    gpus = m.parse_query_csv(text)
    assert gpus[0].values == {"memory.used": 100, "memory.free": 14917, "power.draw": 9.31}
    assert gpus[1].values == {"utilization.gpu": 12, "temperature.gpu": 50}
    series = gpu_series(samples(m.render(gpus, True, 1.0)))
    assert series == {
        ("DCGM_FI_DEV_GPU_UTIL", "1"): 12,
        ("DCGM_FI_DEV_FB_USED", "0"): 100,
        ("DCGM_FI_DEV_FB_FREE", "0"): 14917,
        ("DCGM_FI_DEV_GPU_TEMP", "1"): 50,
        ("DCGM_FI_DEV_POWER_USAGE", "0"): 9.31,
    }


def test_a_metric_no_gpu_has_gets_no_help_or_type() -> None:
    text = m.render(m.parse_query_csv("0, GPU-a, X, [N/A], 1, 2, 3, 4\n"), True, 1.0)
    assert "DCGM_FI_DEV_GPU_UTIL" not in text
    assert "# TYPE DCGM_FI_DEV_FB_USED gauge" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0, GPU-a, Tesla T4, 1, 2\n", "has 5 fields, expected 8"),
        ("No devices were found, a, b, c, d, e, f, g\n", "no GPU index"),
    ],
)
def test_unreadable_answers_are_errors(text: str, message: str) -> None:
    with pytest.raises(m.CollectError, match=message):
        m.parse_query_csv(text)


# --- rendering ------------------------------------------------------------------------------


def test_render_dual_gpu_text_exactly() -> None:
    gpus = m.parse_query_csv(answer(CAPTURES / "dual-a5000-narrow.csv").stdout)
    text = m.render(gpus, True, 1700000000.25)
    labels = (
        'gpu="{i}",UUID="GPU-6f1d2c3b-4a59-4e8d-9c7b-1a2b3c4d5e0{n}",modelName="NVIDIA RTX A5000"'
    )
    l0, l1 = labels.format(i=0, n=1), labels.format(i=1, n=2)
    assert text.splitlines()[:8] == [
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).",
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
        f"DCGM_FI_DEV_GPU_UTIL{{{l0}}} 3",
        f"DCGM_FI_DEV_GPU_UTIL{{{l1}}} 0",
        "# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).",
        "# TYPE DCGM_FI_DEV_FB_USED gauge",
        f"DCGM_FI_DEV_FB_USED{{{l0}}} 300",
        f"DCGM_FI_DEV_FB_USED{{{l1}}} 300",
    ]
    assert f"DCGM_FI_DEV_POWER_USAGE{{{l1}}} 21.87" in text
    assert "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C)." in text
    assert "# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W)." in text
    assert text.endswith(
        "llmfleet_gpu_collector_success 1\n"
        "# HELP llmfleet_gpu_collector_last_run_timestamp_seconds "
        "When the GPU metrics collector last ran, in Unix time.\n"
        "# TYPE llmfleet_gpu_collector_last_run_timestamp_seconds gauge\n"
        "llmfleet_gpu_collector_last_run_timestamp_seconds 1700000000.250\n"
    )
    parsed = samples(text)
    assert len(gpu_series(parsed)) == 10
    for (name, labels), _ in parsed.items():
        if name.startswith("DCGM_"):
            assert {k for k, _ in labels} == {"gpu", "UUID", "modelName"}


def test_label_values_are_escaped() -> None:
    gpu = m.Gpu(index="0", uuid="GPU-x", name='Odd "GPU" \\ line\nbreak', values={"power.draw": 1})
    text = m.render([gpu], True, 1.0)
    assert 'modelName="Odd \\"GPU\\" \\\\ line\\nbreak"' in text
    assert "\nbreak" not in text
    ((_, labels),) = [k for k in samples(text) if k[0].startswith("DCGM_")]
    assert dict(labels)["modelName"] == 'Odd "GPU" \\ line\\nbreak'


def test_failure_renders_only_the_collector_metrics() -> None:
    parsed = samples(m.render([], False, 1234.5))
    assert parsed == {
        ("llmfleet_gpu_collector_success", frozenset()): 0,
        ("llmfleet_gpu_collector_last_run_timestamp_seconds", frozenset()): 1234.5,
    }


# --- the script, end to end -----------------------------------------------------------------


def test_script_against_the_double_writes_the_textfile(tmp_path: Path) -> None:
    before = time.time()
    done = run_script(
        tmp_path,
        "--nvidia-smi",
        str(DOUBLE),
        env={"NVIDIA_SMI_DOUBLE_CSV": str(CAPTURES / "t4.csv")},
    )
    after = time.time()
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    prom = tmp_path / "llmfleet_gpu.prom"
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llmfleet_gpu.prom"]
    parsed = samples(prom.read_text())
    labels = frozenset(
        {
            ("gpu", "0"),
            ("UUID", "GPU-8a5b2f6c-0d3e-4c1a-b7f9-2e4d6c8a0b13"),
            ("modelName", "Tesla T4"),
        }
    )
    assert {k: v for k, v in parsed.items() if k[1] == labels} == {
        ("DCGM_FI_DEV_GPU_UTIL", labels): 0,
        ("DCGM_FI_DEV_FB_USED", labels): 2,
        ("DCGM_FI_DEV_FB_FREE", labels): 14928,
        ("DCGM_FI_DEV_GPU_TEMP", labels): 34,
        ("DCGM_FI_DEV_POWER_USAGE", labels): 9.74,
    }
    assert parsed[("llmfleet_gpu_collector_success", frozenset())] == 1
    stamp = parsed[("llmfleet_gpu_collector_last_run_timestamp_seconds", frozenset())]
    assert before - 0.001 <= stamp <= after


def test_script_finds_nvidia_smi_on_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").symlink_to(DOUBLE)
    out = tmp_path / "out"
    out.mkdir()
    done = run_script(
        out,
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "NVIDIA_SMI_DOUBLE_CSV": str(CAPTURES / "a100-mig.csv"),
        },
    )
    assert done.returncode == 0, done.stderr
    series = gpu_series(samples((out / "llmfleet_gpu.prom").read_text()))
    assert series == {
        ("DCGM_FI_DEV_FB_USED", "0"): 0,
        ("DCGM_FI_DEV_FB_FREE", "0"): 40326,
        ("DCGM_FI_DEV_GPU_TEMP", "0"): 31,
        ("DCGM_FI_DEV_POWER_USAGE", "0"): 56.14,
    }


def _fake_nvidia_smi(tmp_path: Path, body: str) -> Path:
    fake = tmp_path / "fake-nvidia-smi"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "cannot run .*/no-such-nvidia-smi: No such file or directory"),
        ("not-on-path", "nvidia-smi not found on PATH"),
        ("no-driver", "exited with status 9: NVIDIA-SMI has failed because it couldn't"),
        ("old-driver", 'exited with status 2: Field "power.draw" is not a valid field'),
        ("hangs", "did not answer within 0.5 s"),
        ("garbage", "has 1 fields, expected 8"),
    ],
)
def test_failures_report_success_0_and_drop_old_gpu_series(
    tmp_path: Path, case: str, message: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    prom = out / "llmfleet_gpu.prom"
    ok = run_script(
        out, "--nvidia-smi", str(DOUBLE), env={"NVIDIA_SMI_DOUBLE_CSV": str(CAPTURES / "t4.csv")}
    )
    assert ok.returncode == 0 and "DCGM_FI_DEV_GPU_TEMP{" in prom.read_text()

    env: dict[str, str] = {}
    args: list[str] = []
    if case == "missing":
        args = ["--nvidia-smi", str(tmp_path / "no-such-nvidia-smi")]
    elif case == "not-on-path":
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        env = {"PATH": str(empty)}
    elif case == "no-driver":
        args = ["--nvidia-smi", str(DOUBLE)]
        env = {"NVIDIA_SMI_DOUBLE_CSV": str(tmp_path / "absent.csv")}
    elif case == "old-driver":
        header, row = (CAPTURES / "t4.csv").read_text().splitlines()[:2]
        cut = ", ".join(header.split(", ")[:-1]), ", ".join(row.split(", ")[:-1])
        old = tmp_path / "old.csv"
        old.write_text("\n".join(cut) + "\n")
        args = ["--nvidia-smi", str(DOUBLE)]
        env = {"NVIDIA_SMI_DOUBLE_CSV": str(old)}
    elif case == "hangs":
        args = [
            "--nvidia-smi",
            str(_fake_nvidia_smi(tmp_path, "exec sleep 30")),
            "--timeout",
            "0.5",
        ]
    elif case == "garbage":
        args = ["--nvidia-smi", str(_fake_nvidia_smi(tmp_path, "echo 'No devices were found'"))]

    started = time.monotonic()
    done = run_script(out, *args, env=env)
    assert time.monotonic() - started < 20
    assert done.returncode == 1
    assert re.search(message, done.stderr), done.stderr
    assert done.stderr.startswith("llmfleet-gpu-metrics: ")
    parsed = samples(prom.read_text())
    assert gpu_series(parsed) == {}
    assert parsed[("llmfleet_gpu_collector_success", frozenset())] == 0
    assert sorted(p.name for p in out.iterdir()) == ["llmfleet_gpu.prom"]


def test_unwritable_output_dir_exits_2(tmp_path: Path) -> None:
    done = run_script(
        tmp_path / "absent",
        "--nvidia-smi",
        str(DOUBLE),
        env={"NVIDIA_SMI_DOUBLE_CSV": str(CAPTURES / "t4.csv")},
    )
    assert done.returncode == 2
    assert f"cannot write {tmp_path / 'absent' / 'llmfleet_gpu.prom'}" in done.stderr


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "soon"])
def test_timeout_must_be_positive(tmp_path: Path, timeout: str) -> None:
    done = run_script(tmp_path, "--timeout", timeout)
    assert done.returncode == 2
    assert "--timeout" in done.stderr
    assert list(tmp_path.iterdir()) == []


# --- atomic replacement ---------------------------------------------------------------------


def test_write_is_atomic_and_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "llmfleet_gpu.prom"
    target.write_text("old complete file\n")
    new = m.render(m.parse_query_csv(answer(CAPTURES / "rtx-3060.csv").stdout), True, 5.0)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(f"fsync {kind}")
        real_fsync(fd)

    def replace(src: str, dst: str | os.PathLike) -> None:
        src_path = Path(src)
        events.append("replace")
        assert src_path.parent == tmp_path
        assert not src_path.name.endswith(".prom"), "the textfile collector would read it"
        assert src_path.read_text() == new, "the temporary file must be complete before rename"
        assert Path(dst).read_text() == "old complete file\n", "old file must stay until rename"
        assert stat.S_IMODE(src_path.stat().st_mode) == 0o644
        real_replace(src, dst)

    monkeypatch.setattr(m.os, "fsync", fsync)
    monkeypatch.setattr(m.os, "replace", replace)
    m.write_atomic(target, new)
    assert events == ["fsync file", "replace", "fsync dir"]
    assert target.read_text() == new
    assert [p.name for p in tmp_path.iterdir()] == ["llmfleet_gpu.prom"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "llmfleet_gpu.prom"
    target.write_text("old complete file\n")

    def fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(m.os, "fsync", fsync)
    with pytest.raises(OSError, match="No space left"):
        m.write_atomic(target, "new\n")
    assert target.read_text() == "old complete file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["llmfleet_gpu.prom"]


def test_main_reports_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "llmfleet_gpu.prom").write_text("old\n")
    monkeypatch.setenv("NVIDIA_SMI_DOUBLE_CSV", str(CAPTURES / "t4.csv"))

    def fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(m.os, "fsync", fsync)
    rc = m.main(["--output-dir", str(tmp_path), "--nvidia-smi", str(DOUBLE)])
    assert rc == 2
    assert "No space left on device" in capsys.readouterr().err
    assert (tmp_path / "llmfleet_gpu.prom").read_text() == "old\n"


# --- the systemd units ----------------------------------------------------------------------


def _unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (FILES / name).read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_service_runs_the_script_unprivileged_into_its_only_writable_folder() -> None:
    unit = _unit("llmfleet-gpu-metrics.service")
    assert unit["Type"] == ["oneshot"]
    assert unit["User"] == ["prometheus"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["NoNewPrivileges"] == ["yes"]
    (exec_start,) = unit["ExecStart"]
    binary, *args = exec_start.split()
    assert Path(binary).name == SCRIPT.name
    parsed = m.parse_args(args)
    assert [str(parsed.output_dir)] == unit["ReadWritePaths"]
    assert parsed.timeout < int(unit["TimeoutStartSec"][0].rstrip("s"))
    assert "PrivateDevices" not in unit, "nvidia-smi needs /dev/nvidia*"
    assert "/dev/nvidiactl rw" in unit["DeviceAllow"]


def test_timer_fires_every_15_seconds() -> None:
    unit = _unit("llmfleet-gpu-metrics.timer")
    assert unit["AccuracySec"] == ["1s"]
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    (calendar,) = unit["OnCalendar"]
    done = subprocess.run(
        [analyze, "calendar", "--iterations=5", calendar],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
    )
    stamps = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", done.stdout)
    seconds = [time.mktime(time.strptime(s, "%Y-%m-%d %H:%M:%S")) for s in stamps]
    assert len(seconds) == 5
    assert {b - a for a, b in itertools.pairwise(seconds)} == {15.0}


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    service = (FILES / "llmfleet-gpu-metrics.service").read_text()
    (binary,) = {
        line.split("=", 1)[1].split()[0]
        for line in service.splitlines()
        if line.startswith("ExecStart=")
    }
    # verify checks that ExecStart exists: point it at the script in the repository.
    (tmp_path / "llmfleet-gpu-metrics.service").write_text(service.replace(binary, str(SCRIPT)))
    shutil.copy(FILES / "llmfleet-gpu-metrics.timer", tmp_path)
    done = subprocess.run(
        [analyze, "verify", "llmfleet-gpu-metrics.timer", "llmfleet-gpu-metrics.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "llmfleet-gpu-metrics" not in done.stderr, done.stderr


# --- real captures of many GPUs (../shared, when present) ------------------------------------


def _query_tables() -> list[tuple[str, str]]:
    """(id, CSV text with header) for every --query-gpu table in the shared captures."""
    if not SHARED.is_dir():
        return []
    tables = []
    for path in sorted(SHARED.rglob("*")):
        if not path.is_file() or path.suffix in (".xml", ".tsv"):
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for at, line in enumerate(lines):
            if (
                not re.match(r"^(timestamp|index|uuid|name), ", line)
                or "utilization.gpu" not in line
            ):
                continue
            rows = []
            for row in lines[at + 1 :]:
                if not row.strip() or row.startswith("#"):
                    break
                rows.append(row)
            if rows and all(r.count(",") == line.count(",") for r in rows):
                tables.append(
                    (f"{path.relative_to(SHARED)}:{at + 1}", "\n".join([line, *rows]) + "\n")
                )
    return tables


TABLES = _query_tables()


def _expected(table: str) -> list[tuple[str, str, str, dict[str, float]]]:
    """What the table says, read independently of the script: (index, uuid, name, values)."""
    header, *rows = table.splitlines()
    names = [re.sub(r"\s*\[.*\]$", "", cell.strip()) for cell in header.split(",")]
    out = []
    for row in rows:
        cells = dict(zip(names, (c.strip() for c in row.split(",")), strict=True))
        values = {}
        for field in DCGM_NAMES.values():
            number = cells[field].split(" ")[0]
            if re.fullmatch(r"\d+(\.\d+)?", number):
                values[field] = float(number)
        out.append((cells["index"], cells["uuid"], cells["name"], values))
    return out


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared nvidia-smi captures not found at {SHARED}")
def test_shared_captures_hold_query_tables() -> None:
    assert len(TABLES) >= 10
    full = [t for _, t in TABLES if all(f in t.splitlines()[0] for f in m.QUERY_FIELDS)]
    assert len(full) >= 10
    assert any("[N/A]" in t for t in full), "a MIG capture with utilization [N/A] is expected"


@pytest.mark.parametrize(("where", "table"), TABLES, ids=[where for where, _ in TABLES])
def test_shared_capture_through_the_double(tmp_path: Path, where: str, table: str) -> None:
    capture = tmp_path / "capture.csv"
    capture.write_text(table)
    header_fields = {re.sub(r"\s*\[.*\]$", "", c.strip()) for c in table.splitlines()[0].split(",")}
    missing = [f for f in m.QUERY_FIELDS if f not in header_fields]
    out = tmp_path / "out"
    out.mkdir()
    done = run_script(out, "--nvidia-smi", str(DOUBLE), env={"NVIDIA_SMI_DOUBLE_CSV": str(capture)})
    parsed = samples((out / "llmfleet_gpu.prom").read_text())
    if missing:
        # The driver of this capture was not asked our fields: nvidia-smi refuses the query.
        assert done.returncode == 1
        assert f'Field "{missing[0]}" is not a valid field' in done.stderr
        assert gpu_series(parsed) == {}
        assert parsed[("llmfleet_gpu_collector_success", frozenset())] == 0
        return
    assert done.returncode == 0, done.stderr
    assert parsed[("llmfleet_gpu_collector_success", frozenset())] == 1
    want = {}
    for index, uuid, name, values in _expected(table):
        labels = frozenset({("gpu", index), ("UUID", uuid), ("modelName", name)})
        for metric, field in DCGM_NAMES.items():
            if field in values:
                want[(metric, labels)] = values[field]
    assert {k: v for k, v in parsed.items() if k[0].startswith("DCGM_")} == want
    assert want, f"{where}: no values at all"
