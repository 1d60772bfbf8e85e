"""The gpu_facts module: nvidia-smi mocked at the runner, sysfs/procfs faked in tmp_path."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gpu_facts
import pytest
import yaml
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

NO_DRIVER = (
    b"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    b"Make sure that the latest NVIDIA driver is installed and running.\n"
)


class AnsibleExitJson(Exception):
    """exit_json was called."""


class AnsibleFailJson(Exception):
    """fail_json was called."""


@pytest.fixture(autouse=True)
def _patch_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    def exit_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
        raise AnsibleExitJson(kwargs)

    def fail_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
        kwargs["failed"] = True
        raise AnsibleFailJson(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)


class FakeRunner:
    """Stands in for gpu_facts.run_program; records each call.

    ``-q -x`` gets ``result``; the compute capability query gets ``caps``, by
    default what a driver older than 510 says about the unknown field.
    """

    def __init__(
        self, result: gpu_facts.RunResult, caps: gpu_facts.RunResult | None = None
    ) -> None:
        self.result = result
        self.caps = caps or gpu_facts.RunResult(
            2, b'Field "compute_cap" is not a valid field to query.\n', b"", None
        )
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> gpu_facts.RunResult:
        self.calls.append((list(argv), timeout))
        return self.caps if any(a.startswith("--query-gpu") for a in argv) else self.result


@pytest.fixture
def use_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., FakeRunner]:
    """Install a fake runner; a bare ``nvidia-smi`` resolves to /usr/bin/nvidia-smi."""

    def install(result: gpu_facts.RunResult, caps: gpu_facts.RunResult | None = None) -> FakeRunner:
        runner = FakeRunner(result, caps)
        monkeypatch.setattr(gpu_facts, "run_program", runner)
        monkeypatch.setattr(
            basic.AnsibleModule,
            "get_bin_path",
            lambda self, arg, required=False, opt_dirs=None: f"/usr/bin/{arg}",
        )
        return runner

    return install


def answered(stdout: bytes) -> gpu_facts.RunResult:
    return gpu_facts.RunResult(0, stdout, b"", None)


def run_module(args: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    with patch_module_args(args), pytest.raises(AnsibleExitJson) as exc:
        gpu_facts.main()
    return exc.value.args[0]


def fail_module(args: dict[str, Any]) -> dict[str, Any]:
    with patch_module_args(args), pytest.raises(AnsibleFailJson) as exc:
        gpu_facts.main()
    return exc.value.args[0]


@pytest.fixture
def roots(fake_sysfs: Path, fake_proc: Path) -> dict[str, str]:
    return {"sysfs_root": str(fake_sysfs), "proc_root": str(fake_proc)}


def _assert_pci_fallback(result: dict[str, Any]) -> dict[str, Any]:
    hardware = result["ansible_facts"]["llmfleet_hardware"]
    assert result["changed"] is False
    assert hardware["source"] == "pci"
    assert hardware["gpu_count"] == 2
    assert [gpu["pci_bus_id"] for gpu in hardware["gpus"]] == ["0000:01:00.0", "0000:41:00.0"]
    assert hardware["usable_vram_mib"] is None
    assert hardware["cuda_version"] is None
    assert hardware["nvswitch_count"] == 2
    assert result["ansible_facts"]["llmfleet_tier"] is None
    assert result["nvidia_smi_error"]
    return hardware


# ---------------------------------------------------------------------------
# nvidia-smi answering
# ---------------------------------------------------------------------------


def test_nvidia_smi_answering(use_runner: Any, roots: dict[str, str], capture: Any) -> None:
    runner = use_runner(answered(capture("rtx-3060.xml")))
    result = run_module(roots)

    assert runner.calls == [
        (["/usr/bin/nvidia-smi", "-q", "-x"], 30),
        (["/usr/bin/nvidia-smi", *gpu_facts.COMPUTE_CAP_QUERY], 30),
    ]
    assert result["changed"] is False
    assert result["nvidia_smi_error"] is None
    facts = result["ansible_facts"]
    assert facts["llmfleet_tier"] == "standard"
    hardware = facts["llmfleet_hardware"]
    assert hardware["source"] == "nvidia-smi"
    assert hardware["driver_loaded"] is True
    assert hardware["driver_version"] == "535.161.07"
    assert hardware["cuda_version"] == "12.2"
    assert hardware["gpu_count"] == 1
    assert hardware["gpus"][0]["name"] == "NVIDIA GeForce RTX 3060"
    assert hardware["usable_vram_mib"] == 12288
    assert hardware["memory_total_mib"] == 64000
    assert hardware["numa_nodes"] == 2
    assert hardware["nvswitch_count"] == 2  # from sysfs even when nvidia-smi answers
    assert isinstance(hardware["cpu_cores"], int)
    assert hardware["cpu_cores"] >= 1


def test_mig_host_tier(use_runner: Any, roots: dict[str, str], capture: Any) -> None:
    use_runner(answered(capture("a100-mig.xml")))
    facts = run_module(roots)["ansible_facts"]
    assert facts["llmfleet_hardware"]["usable_vram_mib"] == 19968
    assert facts["llmfleet_hardware"]["gpus"][0]["memory_total_mib"] == 40960
    assert facts["llmfleet_tier"] == "pro"


def test_command_line_with_arguments_and_timeout(
    use_runner: Any, roots: dict[str, str], capture: Any
) -> None:
    runner = use_runner(answered(capture("t4.xml")))
    args = {**roots, "nvidia_smi": "fake-smi --capture '/srv/my captures/t4.xml'", "timeout": 7}
    result = run_module(args)
    program = ["/usr/bin/fake-smi", "--capture", "/srv/my captures/t4.xml"]
    assert runner.calls == [
        ([*program, "-q", "-x"], 7),
        ([*program, *gpu_facts.COMPUTE_CAP_QUERY], 7),
    ]
    assert result["ansible_facts"]["llmfleet_tier"] == "pro"


def test_compute_capability_from_the_query(
    use_runner: Any, roots: dict[str, str], capture: Any
) -> None:
    caps = answered(b"00000000:41:00.0, 8.6\n00000000:C1:00.0, 8.6\n")
    use_runner(answered(capture("dual-a5000-narrow.xml")), caps)
    gpus = run_module(roots)["ansible_facts"]["llmfleet_hardware"]["gpus"]
    assert [gpu["compute_capability"] for gpu in gpus] == ["8.6", "8.6"]


def test_a_driver_without_compute_cap_leaves_it_null(
    use_runner: Any, roots: dict[str, str], capture: Any
) -> None:
    use_runner(answered(capture("t4.xml")))
    result = run_module(roots)
    assert result["ansible_facts"]["llmfleet_hardware"]["gpus"][0]["compute_capability"] is None
    assert result["ansible_facts"]["llmfleet_tier"] == "pro"
    assert result["nvidia_smi_error"] is None


def test_custom_tiers_any_order(use_runner: Any, roots: dict[str, str], capture: Any) -> None:
    use_runner(answered(capture("t4.xml")))
    tiers = [{"name": "huge", "vram_gib": 40}, {"name": "mid", "vram_gib": 12, "model": "x"}]
    result = run_module({**roots, "tiers": tiers})
    assert result["ansible_facts"]["llmfleet_tier"] == "mid"
    assert result["tier_thresholds_mib"] == {"huge": 36864, "mid": 11060, "cpu": 0}


def test_default_tier_thresholds(use_runner: Any, roots: dict[str, str], capture: Any) -> None:
    use_runner(answered(capture("t4.xml")))
    assert run_module(roots)["tier_thresholds_mib"] == {
        "base": 3687,
        "standard": 7373,
        "pro": 14746,
        "enterprise": 29492,
        "cpu": 0,
    }


def test_check_mode_same_facts(use_runner: Any, roots: dict[str, str], capture: Any) -> None:
    use_runner(answered(capture("dual-a5000-narrow.xml")))
    normal = run_module(roots)
    checked = run_module(roots, check_mode=True)
    assert checked["changed"] is False
    assert checked["ansible_facts"] == normal["ansible_facts"]
    assert checked["ansible_facts"]["llmfleet_tier"] == "enterprise"


# ---------------------------------------------------------------------------
# Fallback to sysfs
# ---------------------------------------------------------------------------


def test_nvidia_smi_missing_falls_back_to_sysfs(
    monkeypatch: pytest.MonkeyPatch, roots: dict[str, str]
) -> None:
    monkeypatch.setattr(
        basic.AnsibleModule, "get_bin_path", lambda self, arg, required=False, opt_dirs=None: None
    )

    def must_not_run(argv: Sequence[str], timeout: float) -> gpu_facts.RunResult:
        raise AssertionError("nothing should run when nvidia-smi is missing")

    monkeypatch.setattr(gpu_facts, "run_program", must_not_run)
    result = run_module(roots)
    hardware = _assert_pci_fallback(result)
    assert "not found" in result["nvidia_smi_error"]
    assert hardware["driver_loaded"] is False
    assert hardware["driver_version"] is None


def test_missing_absolute_path_falls_back(tmp_path: Path, roots: dict[str, str]) -> None:
    result = run_module({**roots, "nvidia_smi": str(tmp_path / "no-such-nvidia-smi")})
    _assert_pci_fallback(result)
    assert "not found" in result["nvidia_smi_error"]


def test_nvidia_smi_rc_9_falls_back(use_runner: Any, roots: dict[str, str]) -> None:
    use_runner(gpu_facts.RunResult(9, NO_DRIVER, b"", None))
    result = run_module(roots)
    _assert_pci_fallback(result)
    assert result["nvidia_smi_error"].startswith(
        "/usr/bin/nvidia-smi exited with status 9: NVIDIA-SMI has failed"
    )


def test_garbage_output_falls_back(use_runner: Any, roots: dict[str, str]) -> None:
    use_runner(answered(b"<html><body>not what you expected</body></html>"))
    result = run_module(roots)
    _assert_pci_fallback(result)
    assert "<html>" in result["nvidia_smi_error"]


def test_truncated_output_falls_back(use_runner: Any, roots: dict[str, str], capture: Any) -> None:
    use_runner(answered(capture("rtx-3060.xml")[:1500]))
    result = run_module(roots)
    _assert_pci_fallback(result)
    assert "not well-formed" in result["nvidia_smi_error"]


def test_timeout_falls_back(use_runner: Any, roots: dict[str, str]) -> None:
    use_runner(gpu_facts.RunResult(None, b"", b"", "nvidia-smi did not finish within 30 s"))
    result = run_module(roots)
    _assert_pci_fallback(result)
    assert "did not finish" in result["nvidia_smi_error"]


def test_fallback_reports_loaded_kernel_module(use_runner: Any, make_sysfs: Any) -> None:
    # Driver loaded but nvidia-smi broken (library mismatch): still no tier.
    sysfs = make_sysfs(nvidia_module_version="535.161.07")
    use_runner(
        gpu_facts.RunResult(18, b"Failed to initialize NVML: Driver/library version", b"", None)
    )
    result = run_module({"sysfs_root": str(sysfs), "proc_root": str(sysfs / "no-proc")})
    hardware = _assert_pci_fallback(result)
    assert hardware["driver_loaded"] is True
    assert hardware["driver_version"] == "535.161.07"
    assert hardware["memory_total_mib"] is None


def test_no_gpu_anywhere_is_cpu(use_runner: Any, make_sysfs: Any, fake_proc: Path) -> None:
    sysfs = make_sysfs(devices={"0000:00:02.0": {"vendor": "0x8086", "class": "0x030000"}})
    use_runner(gpu_facts.RunResult(9, NO_DRIVER, b"", None))
    result = run_module({"sysfs_root": str(sysfs), "proc_root": str(fake_proc)})
    hardware = result["ansible_facts"]["llmfleet_hardware"]
    assert hardware["source"] == "none"
    assert hardware["gpu_count"] == 0
    assert hardware["gpus"] == []
    assert hardware["usable_vram_mib"] == 0
    assert hardware["nvswitch_count"] == 0
    assert result["ansible_facts"]["llmfleet_tier"] == "cpu"


def test_nothing_readable(tmp_path: Path) -> None:
    result = run_module(
        {
            "nvidia_smi": "/bin/false",
            "sysfs_root": str(tmp_path / "x"),
            "proc_root": str(tmp_path / "y"),
        }
    )
    hardware = result["ansible_facts"]["llmfleet_hardware"]
    assert hardware["source"] == "none"
    assert hardware["numa_nodes"] is None
    assert hardware["nvswitch_count"] is None
    assert hardware["memory_total_mib"] is None
    assert result["ansible_facts"]["llmfleet_tier"] == "cpu"
    assert result["nvidia_smi_error"] == "/bin/false exited with status 1"


# ---------------------------------------------------------------------------
# Invalid arguments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tiers", "fragment"),
    [
        ([{"name": "base", "vram_gib": 4}, {"name": "cpu", "vram_gib": 1}], "tiers[1]"),
        ([{"name": "base", "vram_gib": 4}, {"name": "base", "vram_gib": 6}], "tiers[1]"),
        ([{"name": "", "vram_gib": 4}], "tiers[0]"),
        ([{"name": "big", "vram_gib": 0}], "tiers[0]"),
        ([{"name": "big", "vram_gib": -4}], "tiers[0]"),
    ],
)
def test_bad_tiers_fail(tiers: list[dict[str, Any]], fragment: str, roots: dict[str, str]) -> None:
    result = fail_module({**roots, "tiers": tiers})
    assert result["failed"] is True
    assert result["msg"].startswith("invalid tiers: ")
    assert fragment in result["msg"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"nvidia_smi": "   "}, "must name a program"),
        ({"nvidia_smi": "nvidia-smi 'unclosed"}, "not a valid command line"),
        ({"timeout": 0}, "timeout must be a positive"),
    ],
)
def test_bad_arguments_fail(args: dict[str, Any], fragment: str, roots: dict[str, str]) -> None:
    assert fragment in fail_module({**roots, **args})["msg"]


# ---------------------------------------------------------------------------
# The real runner (a real child process, no mock)
# ---------------------------------------------------------------------------


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_run_program_sets_lc_all(tmp_path: Path) -> None:
    script = _script(tmp_path / "show-locale", 'echo "LC_ALL=$LC_ALL args=$*"\n')
    result = gpu_facts.run_program([str(script), "-q", "-x"], 10)
    assert result == gpu_facts.RunResult(0, b"LC_ALL=C args=-q -x\n", b"", None)


def test_run_program_cannot_execute(tmp_path: Path) -> None:
    result = gpu_facts.run_program([str(tmp_path / "absent")], 10)
    assert result.rc is None
    assert result.error is not None
    assert "cannot execute" in result.error


def test_run_program_kills_a_hang_and_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = _script(tmp_path / "hang", f"sleep 60 &\necho $! > {marker}\nsleep 60\n")
    started = time.monotonic()
    result = gpu_facts.run_program([str(script)], 1)
    elapsed = time.monotonic() - started
    assert result.rc is None
    assert result.error == f"{script} did not finish within 1 s"
    assert elapsed < 10
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the background child of the hung program was left running"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_module_with_hanging_program_does_not_hang(tmp_path: Path, roots: dict[str, str]) -> None:
    script = _script(tmp_path / "nvidia-smi", "exec sleep 60\n")
    started = time.monotonic()
    result = run_module({**roots, "nvidia_smi": str(script), "timeout": 1})
    assert time.monotonic() - started < 10
    _assert_pci_fallback(result)
    assert "did not finish within 1 s" in result["nvidia_smi_error"]


def test_module_with_replaying_double(
    tmp_path: Path, roots: dict[str, str], captures_dir: Path
) -> None:
    double = _script(
        tmp_path / "replay",
        '[ "$1" = --capture ] || exit 2\nshift; f=$1; shift\n'
        '[ "$*" = "-q -x" ] || exit 3\nexec cat "$f"\n',
    )
    capture = captures_dir / "vgpu-guest.xml"
    result = run_module({**roots, "nvidia_smi": f"{double} --capture {capture}"})
    assert result["nvidia_smi_error"] is None
    hardware = result["ansible_facts"]["llmfleet_hardware"]
    assert hardware["source"] == "nvidia-smi"
    assert hardware["gpu_count"] == 1
    assert hardware["attached_gpus"] == 2
    assert hardware["usable_vram_mib"] == 7979
    assert result["ansible_facts"]["llmfleet_tier"] == "standard"
    assert os.access(double, os.X_OK)


def test_return_documents_every_hardware_fact(
    use_runner: Any, roots: dict[str, str], capture: Any
) -> None:
    # The RETURN block is the facts' contract (problems included): it cannot drift.
    use_runner(answered(capture("t4.xml")))
    hardware = run_module(roots)["ansible_facts"]["llmfleet_hardware"]
    documented = yaml.safe_load(gpu_facts.RETURN)["ansible_facts"]["contains"]
    documented = documented["llmfleet_hardware"]["contains"]
    assert set(hardware) == set(documented)
    assert set(hardware["gpus"][0]) == set(documented["gpus"]["contains"])
    assert hardware["problems"] == []
