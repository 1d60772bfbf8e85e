#!/usr/bin/python
"""Ansible module gpu_facts: GPUs, VRAM, PCIe, RAM and CPU of a host, and its model tier."""

# Imports come first (not after the documentation blocks, as in community.general),
# so that ruff needs no E402 exceptions; ansible-doc reads the blocks by AST and
# does not care where they are.
from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.llmfleet_gpu import (
    COMPUTE_CAP_QUERY,
    DEFAULT_TIERS,
    build_hardware_facts,
    count_numa_nodes,
    cpu_core_count,
    decide_tier,
    merge_compute_caps,
    parse_compute_caps_csv,
    parse_nvidia_smi_xml,
    read_meminfo_total_mib,
    read_nvidia_module,
    scan_pci,
    tier_thresholds_mib,
    validate_tiers,
)

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Gather NVIDIA GPU, VRAM, PCIe, RAM and CPU facts and decide the model tier
description:
  - Runs C(nvidia-smi -q -x) once (under C(LC_ALL=C), with a time limit) and reads the GPUs,
    their memory, MIG instances and PCIe links from the XML document; when the document has no
    compute capability, one C(--query-gpu=pci.bus_id,compute_cap --format=csv,noheader) call adds
    it (the engine's CUDA architectures come from it).
  - When nvidia-smi is missing, exits non-zero, times out or prints something that is not a
    C(nvidia_smi_log) document (a fresh host has no driver yet), lists NVIDIA GPUs from PCI sysfs
    instead (vendor C(0x10de), class C(0x0300xx) or C(0x0302xx)); the tier is then undecided
    (null) until a driver answers.
  - NVSwitch bridges (class C(0x0680xx)) are never GPUs; they are counted in C(nvswitch_count).
  - Host RAM comes from C(/proc/meminfo), CPU count from the process's CPU affinity, NUMA nodes
    from sysfs.
  - The tier is the highest entry of O(tiers) whose VRAM class the host's usable VRAM reaches at
    90%; usable VRAM is the sum over the GPUs, a GPU in MIG mode counting with its largest MIG
    instance. C(cpu) when the host has no GPU.
  - Values that cannot be read are null, never guessed.
  - Every bad input is answered with a reason, never a guess and never a hang. A value that is
    present but unusable (a number outside physical bounds, such as more than 16 TiB of memory on
    one GPU; a GPU listed twice under one bus id; a sysfs file that is not a regular file or
    cannot be read; nvidia-smi hanging, flooding its output, or exiting 0 with something that is
    not a document) is null, and a sentence naming the input is added to
    C(llmfleet_hardware.problems). The tier is null (undecided) whenever that list is not empty.
  - sysfs and procfs files are opened only when they are regular files, non-blocking and with a
    size bound, so a FIFO or a device node cannot hang the module. The XML document is parsed with
    every entity declaration refused and nothing external resolved.
  - Never changes anything on the host.
version_added: "0.1.0"
author:
  - llmfleet maintainers
options:
  nvidia_smi:
    description:
      - Program to run, as a command line (split like a shell would, so a test double with
        arguments works). C(-q -x) is appended.
      - A bare name is looked up in C(PATH) and the usual sbin directories.
    type: str
    default: nvidia-smi
  sysfs_root:
    description:
      - Root of sysfs. PCI devices are read from C(<sysfs_root>/bus/pci/devices), NUMA nodes from
        C(<sysfs_root>/devices/system/node), the kernel module from C(<sysfs_root>/module/nvidia).
    type: path
    default: /sys
  proc_root:
    description:
      - Root of procfs; host memory is read from C(<proc_root>/meminfo).
    type: path
    default: /proc
  tiers:
    description:
      - The tier table, in any order. Each entry has a C(name) and a C(vram_gib) (the VRAM class
        in GiB); other keys (a model name, say) are allowed and ignored.
      - Names must be unique, non-empty and not C(cpu) (the fallback tier); C(vram_gib) must be a
        positive, finite number of GiB no larger than 17179869184 (1024 GPUs of 16 TiB), and sorted
        by class the thresholds in MiB (90 % of each class, rounded up) must strictly increase, so
        no two entries tie. A bad table fails the module with a message naming the entry and field.
    type: list
    elements: dict
    default:
      - {name: base, vram_gib: 4}
      - {name: standard, vram_gib: 8}
      - {name: pro, vram_gib: 16}
      - {name: enterprise, vram_gib: 32}
  timeout:
    description:
      - Seconds each nvidia-smi call may run, from 1 to 3600. When it runs longer (or prints more
        than 32 MiB) it is killed with everything it started (its process group, and any process
        descended from it or holding its output), the facts come from sysfs, and the tier is
        undecided; a hung nvidia-smi never hangs the play.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
notes:
  - The module reads only; it reports C(changed=false) and runs the same in check mode.
  - C(pci_bus_id) is given in the Linux sysfs form C(0000:84:00.0) whichever source it came from
    (nvidia-smi writes C(00000000:84:00.0)).
  - Drivers older than R450 write no C(mig_mode); MIG needs R450, so such a GPU has
    C(mig_enabled=false). A GPU that reports C(N/A) for MIG cannot partition, so also C(false).
requirements:
  - Linux target (sysfs, procfs). nvidia-smi is optional.
"""

EXAMPLES = r"""
- name: Gather GPU facts and the model tier
  gpu_facts:

- name: Use a test double that replays a capture
  gpu_facts:
    nvidia_smi: /usr/local/bin/fake-nvidia-smi --capture /srv/captures/a100-mig.xml
    timeout: 10

- name: Site-specific tier table
  gpu_facts:
    tiers:
      - {name: small, vram_gib: 6}
      - {name: large, vram_gib: 24}

- name: Show what was found
  ansible.builtin.debug:
    msg: >-
      {{ ansible_facts.llmfleet_hardware.gpu_count }} GPU(s),
      {{ ansible_facts.llmfleet_hardware.usable_vram_mib }} MiB usable,
      tier {{ ansible_facts.llmfleet_tier }}
"""

RETURN = r"""
nvidia_smi_error:
  description: Why nvidia-smi gave no facts (missing, exit status, timeout, too much output,
    unparsable output); null when it answered.
  returned: always
  type: str
  sample: "/usr/bin/nvidia-smi exited with status 9: NVIDIA-SMI has failed because it couldn't
    communicate with the NVIDIA driver. ..."
tier_thresholds_mib:
  description: Usable VRAM (MiB) each tier needs (90 % of its class); C(cpu) needs 0. The preflight
    role checks a pinned tier against it, so the rule lives in one place.
  returned: always
  type: dict
  sample: {"base": 3687, "standard": 7373, "pro": 14746, "enterprise": 29492, "cpu": 0}
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: complex
  contains:
    llmfleet_tier:
      description: C(base), C(standard), C(pro), C(enterprise) (or the names in O(tiers)), C(cpu)
        when the host has no usable GPU, null while undecided (GPUs seen on PCI but no driver
        answering, some GPU's memory unknown, or any entry in C(llmfleet_hardware.problems)).
      returned: always
      type: str
      sample: pro
    llmfleet_hardware:
      description: What the host has.
      returned: always
      type: dict
      contains:
        source:
          description: C(nvidia-smi), C(pci) (sysfs fallback found GPUs) or C(none).
          type: str
          sample: nvidia-smi
        driver_loaded:
          description: True when nvidia-smi answered; otherwise whether the C(nvidia) kernel
            module is loaded.
          type: bool
        driver_version:
          description: Driver version from nvidia-smi, or from the loaded kernel module.
          type: str
          sample: "535.86.05"
        cuda_version:
          description: CUDA version the driver supports; null when absent or "Not Found".
          type: str
          sample: "12.2"
        attached_gpus:
          description: What the document's C(attached_gpus) claims; may differ from
            C(gpu_count). Null outside the nvidia-smi source.
          type: int
        gpu_count:
          description: Number of GPUs listed (C(<gpu>) elements, or sysfs devices); a bus id listed
            twice counts once.
          type: int
          sample: 1
        gpus:
          description: One entry per GPU in document (or bus) order.
          type: list
          elements: dict
          contains:
            index:
              description: Position from 0 in document (or bus) order.
              type: int
            name:
              description: Product name; null from sysfs.
              type: str
              sample: NVIDIA A100-SXM4-40GB
            uuid:
              description: GPU UUID; null from sysfs.
              type: str
            pci_bus_id:
              description: Bus id in the sysfs form.
              type: str
              sample: "0000:84:00.0"
            pci_device_id:
              description: PCI device id.
              type: str
              sample: "0x2684"
            memory_total_mib:
              description: Memory of the whole GPU (never a MIG slice); null from sysfs.
              type: int
              sample: 40960
            mig_enabled:
              description: MIG mode is on; null when unreadable (and from sysfs).
              type: bool
            mig_instances_mib:
              description: Memory of each MIG GPU instance (compute instances sharing one GPU
                instance are listed once).
              type: list
              elements: int
              sample: [19968, 19968, 9728]
            usable_vram_mib:
              description: What one model can use on this GPU, the whole memory or with MIG on the
                largest instance (0 with none); null when unknown.
              type: int
            pcie_gen_max:
              description: Max PCIe generation of the link; from DTD v12 on, the lower of the
                device's and the host's.
              type: int
            pcie_gen_max_device:
              description: Max PCIe generation of the GPU (DTD v12+, else null).
              type: int
            pcie_gen_max_host:
              description: Max PCIe generation of the host side (DTD v12+, else null).
              type: int
            pcie_gen_current:
              description: Current PCIe generation (often 1 while idle).
              type: int
            pcie_width_max:
              description: Max link width in lanes.
              type: int
            pcie_width_current:
              description: Current link width in lanes.
              type: int
            compute_capability:
              description: Compute capability such as "8.0", from the document or, since
                C(-q -x) usually lacks it, from one C(--query-gpu=pci.bus_id,compute_cap) call
                (driver 510 and newer); null when the driver does not say. Never derived from the
                product name.
              type: str
        usable_vram_mib:
          description: Sum of the GPUs' usable VRAM; null when some GPU's is unknown.
          type: int
          sample: 15360
        memory_total_mib:
          description: Host RAM (MemTotal) in MiB.
          type: int
        cpu_cores:
          description: CPUs this process may run on.
          type: int
        numa_nodes:
          description: NUMA nodes; null when sysfs has none.
          type: int
        nvswitch_count:
          description: NVIDIA NVSwitch PCI devices (HGX boards); null when sysfs is unreadable, or
            some PCI device's vendor or class cannot be read.
          type: int
        problems:
          description:
            - Why the hardware could not be read completely, one sentence per bad input, each
              naming it (the sysfs or procfs path, or the nvidia-smi element and field); empty when
              everything was read. While it is not empty C(llmfleet_tier) is null.
            - A missing nvidia-smi or one that exits non-zero (no driver yet) is not a problem; it
              is reported in C(nvidia_smi_error) and the facts come from sysfs.
          type: list
          elements: str
          sample:
            - "sysfs /sys/bus/pci/devices/0000:17:00.0/vendor is not a regular file (a FIFO)"
            - "nvidia-smi <gpu> 0 (0000:01:00.0): fb_memory_usage/total '100000000000000000000 MiB'
              is not a memory size from 1 MiB to 16 TiB (16777216 MiB)"
            - "nvidia-smi <gpu> 1: pci_bus_id 0000:01:00.0 repeats <gpu> 0; counted once"
            - "nvidia-smi -q -x: /usr/bin/nvidia-smi did not finish within 30 s"
"""

#: Seconds a killed nvidia-smi (and whatever it left) gets to go away before it is
#: abandoned: a process stuck in the kernel (state D) cannot be reaped and must not
#: block the module.
KILL_GRACE_S = 5.0
#: Most bytes nvidia-smi may print on one stream. A ``-q -x`` document is about
#: 10 KiB per GPU (60 KiB with MIG), so 32 MiB is hundreds of times the largest
#: host's; a program that prints more is flooding, and is killed.
MAX_OUTPUT_BYTES = 32 * 1024 * 1024
#: Most seconds the ``timeout`` option may ask for: nvidia-smi answers in seconds,
#: and a longer wait is a hang by another name.
MAX_TIMEOUT_S = 3600
#: How often the child's exit is polled where ``pidfd_open`` is unavailable.
_POLL_S = 0.05


class RunResult(NamedTuple):
    rc: int | None
    stdout: bytes
    stderr: bytes
    error: str | None  # why there is no exit status: timeout, too much output, cannot execute
    killed: bool = False  # it was killed (timeout, too much output): it hung, not "no driver"


def run_program(
    argv: Sequence[str], timeout: float, max_output: int = MAX_OUTPUT_BYTES
) -> RunResult:
    """Run ``argv`` under LC_ALL=C with a hard time limit; leave nothing running.

    Not AnsibleModule.run_command: in ansible-core 2.19 it has no time limit, and
    its read loop only returns once the child has exited. The classic nvidia-smi
    hang (a GPU fallen off the bus) leaves the process stuck in the kernel where
    even SIGKILL does not finish it, so a limit bolted onto run_command (a timer
    that kills the child) would still wait forever.

    The child gets its own session and process group. Whether it exits, runs
    past ``timeout`` or prints more than ``max_output`` bytes on a stream, before
    it is reaped (so its group id cannot be reused) everything it left is
    killed: its process group, and, when it did not end cleanly, every process
    descended from it or holding its output pipes, which finds the children that
    left the group with setsid(). After a short grace an unkillable process is
    abandoned.
    """
    env = dict(os.environ, LC_ALL="C")
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        return RunResult(None, b"", b"", f"cannot execute {argv[0]}: {exc.strerror or exc}")
    assert proc.stdout is not None and proc.stderr is not None
    pipes = (proc.stdout.fileno(), proc.stderr.fileno())
    output = {fd: bytearray() for fd in pipes}
    why = None
    try:
        why, open_pipes = _collect(proc.pid, pipes, output, time.monotonic() + timeout, max_output)
        grace = time.monotonic() + KILL_GRACE_S
        _kill_leftovers(proc.pid, pipes, thorough=why is not None or bool(open_pipes))
        if why is None and open_pipes:  # the tail of what it printed, now that no one writes
            _collect(None, open_pipes, output, grace, max_output)
        with contextlib.suppress(subprocess.TimeoutExpired):  # unkillable (state D): leave it
            proc.wait(timeout=max(grace - time.monotonic(), 0.1))
    finally:
        if proc.returncode is None:  # interrupted: never leave it running
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()
    if why == "timeout":
        return RunResult(None, b"", b"", f"{argv[0]} did not finish within {timeout:g} s", True)
    if why == "output":
        error = f"{argv[0]} printed more than {max_output} bytes"
        return RunResult(None, b"", b"", error, True)
    return RunResult(proc.returncode, bytes(output[pipes[0]]), bytes(output[pipes[1]]), None)


def _collect(
    pid: int | None,
    pipes: Sequence[int],
    output: dict[int, bytearray],
    deadline: float,
    max_output: int,
) -> tuple[str | None, list[int]]:
    """Read ``pipes`` into ``output`` until process ``pid`` has exited (left
    unreaped) and the pipes are closed, or, with no ``pid``, until the pipes close.

    Returns ``(why, pipes still open)``: ``why`` is None, "timeout" (the
    deadline passed) or "output" (a stream passed ``max_output`` bytes).
    """
    open_pipes = list(pipes)
    pidfd = _pidfd_open(pid) if pid is not None else None
    try:
        with selectors.DefaultSelector() as selector:
            for fd in open_pipes:
                selector.register(fd, selectors.EVENT_READ)
            if pidfd is not None:
                selector.register(pidfd, selectors.EVENT_READ)
            while True:
                if pid is not None and _has_exited(pid):
                    # Done. Whatever still holds a pipe is a leftover, killed next.
                    return None, open_pipes
                if pid is None and not open_pipes:
                    return None, open_pipes
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timeout", open_pipes
                if pid is not None and pidfd is None:
                    remaining = min(remaining, _POLL_S)
                for key, _ in selector.select(remaining):
                    if key.fd == pidfd:
                        selector.unregister(pidfd)  # exited: seen at the top of the loop
                        continue
                    data = os.read(key.fd, 65536)
                    if not data:
                        selector.unregister(key.fd)
                        open_pipes.remove(key.fd)
                        continue
                    output[key.fd] += data
                    if len(output[key.fd]) > max_output:
                        return "output", open_pipes
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd_open(pid: int) -> int | None:
    """A pidfd (readable once ``pid`` exits), or None where the kernel has none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    """Whether child ``pid`` has exited, without reaping it (its process group id
    stays its own while it is a zombie)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_leftovers(leader: int, pipes: Sequence[int], thorough: bool) -> None:
    """SIGKILL the process group of ``leader`` (not yet reaped) and, when
    ``thorough``, every process descended from it or holding one of ``pipes``.

    The group is stopped first and each process found is stopped as it is found,
    so nothing can start a new child between the search and the kill; the search
    repeats until it finds no one new.
    """
    with contextlib.suppress(OSError):
        os.killpg(leader, signal.SIGSTOP)
    found: dict[int, int] = {}
    if thorough:
        inodes = {f"pipe:[{os.fstat(fd).st_ino}]" for fd in pipes}
        for _ in range(16):
            new = {
                pid: start
                for pid, start in _descendants_and_holders([leader, *found], inodes).items()
                if pid not in found
            }
            if not new:
                break
            for pid, start in new.items():
                _signal_exact(pid, start, signal.SIGSTOP)
            found.update(new)
    with contextlib.suppress(OSError):
        os.killpg(leader, signal.SIGKILL)
    for pid, start in found.items():
        _signal_exact(pid, start, signal.SIGKILL)


def _proc_stat(pid: int | str) -> tuple[int, int] | None:
    """``(parent pid, start time)`` of a process from ``/proc/<pid>/stat``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _descendants_and_holders(roots: Sequence[int], pipe_links: set[str]) -> dict[int, int]:
    """``{pid: start time}`` of the processes below ``roots`` (by parent pid) and
    of those holding a descriptor that links to one of ``pipe_links``, with
    everything below them. This process is never included."""
    me = os.getpid()
    table: dict[int, tuple[int, int]] = {}
    holders: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        info = _proc_stat(name)
        if info is None:
            continue
        table[int(name)] = info
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{name}/fd/{fd}") in pipe_links:
                        holders.append(int(name))
                        break
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    result: dict[int, int] = {}
    queue = [*roots, *holders]
    while queue:
        pid = queue.pop()
        if pid in table and pid not in result and pid not in roots:
            result[pid] = table[pid][1]
        queue.extend(child for child in children.get(pid, ()) if child not in result)
    return result


def _signal_exact(pid: int, start: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` only if it is still the process that started at
    ``start`` (through a pidfd where there is one, so a reused pid is never hit)."""
    pidfd = _pidfd_open(pid)
    try:
        info = _proc_stat(pid)
        if info is None or info[1] != start:
            return
        with contextlib.suppress(OSError):
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                os.kill(pid, sig)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def resolve_command(
    command_line: str, find_bin: Callable[[str], str | None]
) -> tuple[list[str] | None, str | None]:
    """Split the command line and resolve a bare program name.

    Returns ``(argv, None)`` or ``(None, why)`` when the program is missing.
    """
    argv = shlex.split(command_line)
    program = argv[0]
    if os.sep not in program:
        found = find_bin(program)
        if not found:
            return None, f"{program} not found in PATH"
        argv[0] = found
    elif not os.path.isfile(program) or not os.access(program, os.X_OK):
        return None, f"{program} not found or not executable"
    return argv, None


def _first_line(data: bytes) -> str:
    for line in data.decode("utf-8", errors="replace").splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def query_nvidia_smi(
    command_line: str,
    timeout: float,
    find_bin: Callable[[str], str | None],
    runner: Callable[[Sequence[str], float], RunResult] = run_program,
    problems: list[str] | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """Run ``nvidia-smi -q -x``; return ``(parsed document, None)`` or ``(None, why)``.

    When the document names no compute capability (``-q -x`` does not), one
    ``--query-gpu`` call adds it; a driver too old for that field leaves it null.
    Each call may run ``timeout`` seconds.

    Missing, failing (no driver) or not executable: only ``why``. Hung (killed
    after the timeout, or for flooding), or exiting 0 with output that is not a
    document: the driver is there but cannot be read, so a problem as well.
    """
    program, missing = resolve_command(command_line, find_bin)
    if program is None:
        return None, missing
    argv = [*program, "-q", "-x"]
    result = runner(argv, timeout)
    if result.error is not None:
        if result.killed and problems is not None:
            problems.append(f"nvidia-smi -q -x: {result.error}")
        return None, result.error
    if result.rc != 0:
        detail = _first_line(result.stdout) or _first_line(result.stderr)
        return None, f"{argv[0]} exited with status {result.rc}" + (f": {detail}" if detail else "")
    try:
        smi = parse_nvidia_smi_xml(result.stdout)
    except ValueError as exc:
        if problems is not None:
            problems.append(f"nvidia-smi -q -x: {argv[0]} exited with status 0 but {exc}")
        return None, str(exc)
    if any(gpu["compute_capability"] is None for gpu in smi["gpus"]):
        caps = runner([*program, *COMPUTE_CAP_QUERY], timeout)
        if caps.killed and problems is not None:
            problems.append(f"nvidia-smi {COMPUTE_CAP_QUERY[0]}: {caps.error}")
        elif caps.error is None and caps.rc == 0:
            merge_compute_caps(smi, parse_compute_caps_csv(caps.stdout, problems))
    return smi, None


def gather(
    params: Mapping[str, Any],
    tiers: Sequence[Mapping[str, Any]],
    find_bin: Callable[[str], str | None],
    runner: Callable[[Sequence[str], float], RunResult] = run_program,
) -> dict[str, Any]:
    """Everything the module returns apart from ``changed``."""
    problems: list[str] = []
    smi, error = query_nvidia_smi(
        params["nvidia_smi"], params["timeout"], find_bin, runner, problems
    )
    sysfs_root = params["sysfs_root"]
    hardware = build_hardware_facts(
        smi=smi,
        pci=scan_pci(sysfs_root, problems),
        nvidia_module=read_nvidia_module(sysfs_root, problems),
        memory_total_mib=read_meminfo_total_mib(params["proc_root"], problems),
        cpu_cores=cpu_core_count(),
        numa_nodes=count_numa_nodes(sysfs_root, problems),
        problems=problems,
    )
    tier = decide_tier(hardware["source"], hardware["usable_vram_mib"], tiers, hardware["problems"])
    return {
        "nvidia_smi_error": error,
        "tier_thresholds_mib": tier_thresholds_mib(tiers),
        "ansible_facts": {"llmfleet_hardware": hardware, "llmfleet_tier": tier},
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "nvidia_smi": {"type": "str", "default": "nvidia-smi"},
            "sysfs_root": {"type": "path", "default": "/sys"},
            "proc_root": {"type": "path", "default": "/proc"},
            "tiers": {
                "type": "list",
                "elements": "dict",
                "default": [dict(tier) for tier in DEFAULT_TIERS],
            },
            "timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        tiers = validate_tiers(params["tiers"])
    except ValueError as exc:
        module.fail_json(msg=f"invalid tiers: {exc}")
    try:
        if not shlex.split(params["nvidia_smi"]):
            module.fail_json(msg="nvidia_smi must name a program")
    except ValueError as exc:
        module.fail_json(msg=f"nvidia_smi is not a valid command line: {exc}")
    if not 0 < params["timeout"] <= MAX_TIMEOUT_S:
        module.fail_json(
            msg=f"timeout must be a positive number of seconds up to {MAX_TIMEOUT_S}, "
            f"got {params['timeout']}"
        )

    # run_program is looked up here, at call time, so unit tests can replace it.
    result = gather(params, tiers, module.get_bin_path, run_program)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
