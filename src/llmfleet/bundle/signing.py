"""The bundle signing key and OpenPGP checks, through the gpg and gpgv commands.

The private key lives in a GnuPG home OUTSIDE the bundle (`--signing-home`, else
$LLMFLEET_SIGNING_HOME, else ~/.local/share/llmfleet/signing, mode 0700). It is generated on
the first build (ed25519, no passphrase, no expiry) and reused after. Only the public key goes
into the bundle. Checks (`gpgv_check`) use the bundle's public keyring alone.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from llmfleet_bundle import SignatureCheck, gpgv_verify

KEY_UID = "llmfleet bundle <bundle@llmfleet.invalid>"
GPG_BASE = ("--batch", "--no-tty", "--quiet", "--no-permission-warning")


class SigningError(Exception):
    """gpg failed or a key is not the one expected; the message says which."""


def default_signing_home(env: Mapping[str, str]) -> Path:
    if env.get("LLMFLEET_SIGNING_HOME"):
        return Path(env["LLMFLEET_SIGNING_HOME"])
    return Path.home() / ".local" / "share" / "llmfleet" / "signing"


def _run(command: Sequence[str], what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        result = subprocess.run(list(command), capture_output=True, check=False)
    except FileNotFoundError:
        raise SigningError(
            f"{command[0]} is not installed (Debian package gnupg, or gpgv for gpgv)"
        ) from None
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()
        raise SigningError(f"{what} failed ({command[0]} exit {result.returncode}): {detail}")
    return result


def parse_colons(text: str) -> list[tuple[str, list[str]]]:
    """(primary fingerprint, uids) of every key in `gpg --with-colons` output."""
    keys: list[tuple[str, list[str]]] = []
    expect_primary = False
    for line in text.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sec"):
            expect_primary = True
        elif fields[0] == "fpr" and expect_primary and len(fields) > 9:
            keys.append((fields[9], []))
            expect_primary = False
        elif fields[0] == "uid" and keys and len(fields) > 9:
            keys[-1][1].append(fields[9])
        elif fields[0] in ("sub", "ssb"):
            expect_primary = False
    return keys


def key_fingerprints(key_file: Path, gpg: str = "gpg") -> list[str]:
    """Primary-key fingerprints in a key file (binary or armored), read without importing."""
    with tempfile.TemporaryDirectory(prefix="llmfleet-gpg-") as home:
        result = _run(
            [gpg, "--homedir", home, *GPG_BASE, "--with-colons", "--show-keys", str(key_file)],
            f"reading the keys in {key_file}",
        )
    return [fingerprint for fingerprint, _ in parse_colons(result.stdout.decode())]


def export_key(key_file: Path, fingerprint: str, gpg: str = "gpg") -> bytes:
    """The key `fingerprint` (with its subkeys) from `key_file` as a binary keyring.

    SigningError when the file holds no primary key with that fingerprint.
    """
    found = key_fingerprints(key_file, gpg)
    if fingerprint not in found:
        listed = ", ".join(found) or "no key at all"
        raise SigningError(f"the key file holds {listed}, not the expected {fingerprint}")
    with tempfile.TemporaryDirectory(prefix="llmfleet-gpg-") as home:
        _run([gpg, "--homedir", home, *GPG_BASE, "--import", str(key_file)], "importing a key")
        result = _run(
            [gpg, "--homedir", home, *GPG_BASE, "--export", fingerprint], "exporting a key"
        )
    if not result.stdout:
        raise SigningError(f"gpg exported nothing for {fingerprint}")
    return result.stdout


def _run_gpgv(command: list[str]) -> tuple[int, str, str]:
    try:
        result = subprocess.run(command, capture_output=True, check=False)
    except FileNotFoundError:
        raise SigningError("gpgv is not installed (Debian package gpgv)") from None
    stdout, stderr = (out.decode(errors="replace") for out in (result.stdout, result.stderr))
    return result.returncode, stdout, stderr


def gpgv_check(
    keyring: Path, signature: Path, data: Path | None = None, gpgv: str = "gpgv"
) -> SignatureCheck:
    """Check `signature` (detached over `data`, or clearsigned when `data` is None).

    Only the keys in `keyring` count. For a clearsigned file the signed text is returned.
    The check is llmfleet_bundle's (the bundle_manifest module runs the same one).
    """
    with tempfile.TemporaryDirectory(prefix="llmfleet-gpgv-") as home:
        return gpgv_verify(
            _run_gpgv, str(keyring), str(signature), None if data is None else str(data), home, gpgv
        )


class Signer:
    """The bundle key in a GnuPG home: generate once, export the public part, sign files."""

    def __init__(self, home: Path, gpg: str = "gpg") -> None:
        self.home = home
        self.gpg = gpg
        self._fingerprint: str | None = None

    def _gpg(self, *args: str, what: str) -> bytes:
        command = [
            self.gpg,
            "--homedir",
            str(self.home),
            *GPG_BASE,
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            *args,
        ]
        return _run(command, what).stdout

    def _prepare_home(self) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.home.stat().st_mode & 0o077:
            os.chmod(self.home, 0o700)

    def secret_keys(self) -> list[tuple[str, list[str]]]:
        out = self._gpg("--with-colons", "--list-secret-keys", what="listing the signing keys")
        return parse_colons(out.decode())

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            raise SigningError("ensure_key() first")
        return self._fingerprint

    def ensure_key(self) -> tuple[str, bool]:
        """The signing key's fingerprint, generating the key when the home has none.

        Returns (fingerprint, generated).
        """
        self._prepare_home()
        keys = self.secret_keys()
        generated = False
        if not keys:
            self._gpg(
                "--quick-gen-key",
                KEY_UID,
                "ed25519",
                "sign",
                "never",
                what=f"generating the bundle key in {self.home}",
            )
            keys = self.secret_keys()
            generated = True
        ours = [key for key in keys if any(KEY_UID in uid for uid in key[1])]
        chosen = keys if len(keys) == 1 else ours
        if len(chosen) != 1:
            raise SigningError(
                f"{self.home} holds {len(keys)} secret keys: keep exactly one, "
                f"or one with the uid {KEY_UID!r}"
            )
        self._fingerprint = chosen[0][0]
        return self._fingerprint, generated

    def export_public(self, armor: bool) -> bytes:
        args = ["--armor"] if armor else []
        data = self._gpg(*args, "--export", self.fingerprint, what="exporting the public key")
        if not data:
            raise SigningError(f"gpg exported no public key for {self.fingerprint}")
        return data

    def _sign(self, modes: Sequence[str], data: Path, out: Path) -> None:
        temp = out.with_name(f".{out.name}.tmp")
        try:
            self._gpg(
                "--yes",
                "--local-user",
                self.fingerprint,
                "--digest-algo",
                "SHA512",
                *modes,
                "--output",
                str(temp),
                str(data),
                what=f"signing {data.name}",
            )
            os.chmod(temp, 0o644)
            os.replace(temp, out)
        finally:
            temp.unlink(missing_ok=True)

    def sign_detached(self, data: Path, out: Path) -> None:
        """An ASCII-armored detached signature of `data` at `out` (e.g. Release.gpg)."""
        self._sign(["--armor", "--detach-sign"], data, out)

    def clearsign(self, data: Path, out: Path) -> None:
        """A clearsigned copy of `data` at `out` (apt's InRelease)."""
        self._sign(["--clearsign"], data, out)

    def close(self) -> None:
        """Stop the gpg-agent this home started (the key stays)."""
        if self.home.is_dir():
            subprocess.run(
                ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
                capture_output=True,
                check=False,
            )
