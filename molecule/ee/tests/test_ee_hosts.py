"""What the execution environment's run relied on and left on each host (testinfra): sshd from
the bundle, the machine credential's key as root's only authorized key, and the EE's logins
with that key in sshd's journal (the run came over ssh, as AWX's does)."""

from __future__ import annotations


def test_sshd_from_the_bundle_runs_and_listens(host) -> None:
    assert host.package("openssh-server").is_installed
    assert host.service("ssh").is_running
    assert host.socket("tcp://0.0.0.0:22").is_listening


def test_root_authorizes_only_the_machine_credential(host) -> None:
    keys = host.file("/root/.ssh/authorized_keys")
    assert keys.user == "root"
    assert keys.mode == 0o600
    lines = [line for line in keys.content_string.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("ssh-ed25519 ")


def test_the_execution_environment_logged_in_with_the_key(host) -> None:
    journal = host.check_output("journalctl --unit ssh --no-pager --output cat")
    assert "Accepted publickey for root" in journal
    assert "Accepted password" not in journal
