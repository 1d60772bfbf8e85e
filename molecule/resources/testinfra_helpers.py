"""What the scenarios' testinfra tests (molecule/<scenario>/tests/) ask their hosts alike.

A scenario's tests/conftest.py puts this folder on sys.path (pytest's rootdir is the
repository's root, and `molecule` is the name of the tool's own package) and has pytest
rewrite the asserts here, so a failure shows its values.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The nvidia-smi test double and the captures it replays (molecule/resources/prepare.yml).
NVIDIA_SMI_DOUBLE = "/usr/local/bin/nvidia-smi"
NVIDIA_SMI_DOUBLE_SHARE = "/usr/local/share/nvidia-smi-double"

# dpkg states in which no file of the package is on the host.
_ABSENT = {"not-installed", "config-files"}


def variables(host) -> dict:
    """The host's variables in Molecule's inventory (host and group vars, not templated)."""
    return host.ansible.get_variables()


def in_group(host, group: str) -> bool:
    return group in variables(host)["group_names"]


def installed_packages(host) -> dict[str, str]:
    """Every package dpkg has files of on the host (held or not), with its version."""
    out = host.check_output(
        r"dpkg-query --show --showformat='${Package}\t${db:Status-Status}\t${Version}\n'"
    )
    packages = {}
    for line in out.splitlines():
        name, status, version = line.split("\t")
        if status not in _ABSENT:
            packages[name] = version
    return packages


def held_packages(host) -> set[str]:
    return set(host.check_output("apt-mark showhold").split())


def apt_sources(host) -> list[str]:
    """The files apt reads its sources from, sorted."""
    return host.check_output(
        "find /etc/apt /etc/apt/sources.list.d -maxdepth 1 -type f "
        r"\( -name sources.list -o -name '*.list' -o -name '*.sources' \) | sort"
    ).split()


def apt_source_urls(host, package: str) -> list[str]:
    """The URLs `apt-cache policy` offers the package from (the dpkg status is no URL)."""
    return re.findall(r"\bhttps?://\S+", host.check_output("apt-cache policy %s", package))


def unit_property(host, unit: str, name: str) -> str:
    """One property of a systemd unit (ActiveState, UnitFileState, ...), as systemd states it."""
    return host.check_output("systemctl show --property=%s --value %s", name, unit)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_nvidia_smi_double(host) -> None:
    """The prepare step's nvidia-smi double is on the host exactly when the inventory gives
    it a capture (test_capture), and replays that capture: the simulated GPU every
    later check rests on."""
    capture = variables(host).get("test_capture")
    double = host.file(NVIDIA_SMI_DOUBLE)
    if not capture:
        assert not double.exists, f"{NVIDIA_SMI_DOUBLE} is there, with no capture to replay"
        return
    assert double.is_file and double.mode == 0o755
    assert double.sha256sum == sha256(REPO / "tests/doubles/nvidia-smi")
    assert host.check_output("command -v nvidia-smi") == NVIDIA_SMI_DOUBLE
    xml = host.file(f"{NVIDIA_SMI_DOUBLE_SHARE}/capture.xml")
    assert xml.sha256sum == sha256(REPO / "tests/captures" / capture)
    csv = REPO / "tests/captures" / re.sub(r"[.]xml$", ".csv", capture)
    on_host = host.file(f"{NVIDIA_SMI_DOUBLE_SHARE}/capture.csv")
    if csv.is_file():
        assert on_host.sha256sum == sha256(csv)
    else:
        assert not on_host.exists
    assert "<nvidia_smi_log>" in host.check_output("nvidia-smi -q -x")
