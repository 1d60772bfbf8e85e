"""apt: resolve a package closure inside a container of the target, then publish a flat repo.

Resolution runs `apt-get` in a throwaway container of the spec's image (`docker run --rm`),
with a private apt configuration: only the spec's sources (deb822, each with its Signed-By
keyring; apt's trusted keyrings are switched off), private lists and cache, the spec's
architecture, and an EMPTY dpkg status, so the closure is complete for a bare host. The
archives folder is a bind mount that persists between builds, so apt downloads only debs it
does not already hold. Nothing secret goes into the container: the sources, public keyrings
and the script below.

On the build machine the debs are hard-linked (or copied) into DIR/apt/<repo>/, indexed with
`apt-ftparchive` (Debian package apt-utils) and the Release file is signed with the bundle key
(InRelease and Release.gpg). No python-apt: only subprocesses.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from llmfleet.bundle.fetch import Fetcher, FetchError, HashCache, place
from llmfleet.bundle.signing import Signer, SigningError, export_key, gpgv_check, key_fingerprints
from llmfleet.bundle.spec import AptRepo, AptSource
from llmfleet.fileio import write_atomic

INDEX_FILES = ("Packages", "Packages.gz", "Release", "InRelease", "Release.gpg")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: What `essential: true` adds: the packages every Debian or Ubuntu host is assumed to have,
#: which no package declares as a dependency (apt patterns, apt >= 2.0).
ESSENTIAL_PATTERNS = ("?essential", "?priority(required)")

RESOLVE_SCRIPT = r"""#!/bin/sh
# llmfleet bundle: resolve and download a package closure for a bare host.
# Runs in a throwaway container of the target image; arguments: packages and apt patterns.
set -eu
export APT_CONFIG=/llmfleet/etc/apt.conf DEBIAN_FRONTEND=noninteractive LC_ALL=C
mkdir -p /llmfleet/state /llmfleet/cache /llmfleet/log /llmfleet/nothing/partial \
  /llmfleet/archives/partial /llmfleet/lists/partial
: >/llmfleet/state/status  # an empty dpkg status: the closure is for a bare host
echo "llmfleet: apt-get update"
apt-get -q -o APT::Update::Error-Mode=any update
# With an empty archive folder apt prints the URI of every package of the closure.
apt-get -qq -y --print-uris -o Dir::Cache::archives=/llmfleet/nothing install "$@" \
  >/llmfleet/out/uris
# The index's SHA256 of each (print-uris may show a weaker hash).
sed -n "s/^'[^']*' \([^_ ]*\)_\([^_ ]*\)_[^_ ]*\.deb .*/\1=\2/p" /llmfleet/out/uris \
  | sed 's/%3a/:/g' >/llmfleet/out/wanted
xargs apt-cache show </llmfleet/out/wanted >/llmfleet/out/show
echo "llmfleet: downloading $(wc -l </llmfleet/out/wanted) packages (those not cached)"
apt-get -q -y --download-only install "$@"
chown -R "$LLMFLEET_OWNER" /llmfleet/archives /llmfleet/lists /llmfleet/out
"""


class AptError(Exception):
    """apt, docker or apt-ftparchive failed; the message names the repo and says why."""


@dataclass(frozen=True)
class DebRef:
    """One package of the closure, as apt resolved it."""

    package: str
    version: str
    architecture: str
    url: str
    archive_name: str
    size: int
    sha256: str

    @property
    def pool_name(self) -> str:
        """The file name in the bundle: Debian's pool form, no epoch (no ':' or '%3a')."""
        version = self.version.split(":", 1)[-1]
        return f"{self.package}_{version}_{self.architecture}.deb"


# --- rendering the private apt configuration ----------------------------------------------


def render_apt_conf(repo: AptRepo, ca_bundle: bool) -> str:
    """apt.conf for the container: only our sources, keys, lists, cache and an empty status."""
    recommends = "true" if repo.install_recommends else "false"
    lines = [
        'Dir::Etc::SourceList "/llmfleet/etc/sources.list";',
        'Dir::Etc::SourceParts "/llmfleet/etc/sources.list.d";',
        'Dir::Etc::Trusted "/llmfleet/etc/no-trusted/trusted.gpg";',
        'Dir::Etc::TrustedParts "/llmfleet/etc/no-trusted/trusted.gpg.d";',
        'Dir::Etc::Preferences "/llmfleet/etc/preferences";',
        'Dir::Etc::PreferencesParts "/llmfleet/etc/preferences.d";',
        'Dir::State "/llmfleet/state";',
        'Dir::State::Lists "/llmfleet/lists";',
        'Dir::State::status "/llmfleet/state/status";',
        'Dir::Cache "/llmfleet/cache";',
        'Dir::Cache::archives "/llmfleet/archives";',
        'Dir::Log "/llmfleet/log";',
        f'APT::Architecture "{repo.architecture}";',
        f'APT::Architectures {{ "{repo.architecture}"; }};',
        f'APT::Install-Recommends "{recommends}";',
        'APT::Install-Suggests "false";',
        'Acquire::Languages "none";',
        'Acquire::Retries "3";',
    ]
    if ca_bundle:
        lines.append('Acquire::https::CaInfo "/llmfleet/ca-certificates.crt";')
    return "\n".join(lines) + "\n"


def render_sources(sources: tuple[AptSource, ...], keyrings: dict[int, str]) -> str:
    """deb822 sources; `keyrings` maps a source's index to its keyring path in the container."""
    blocks = []
    for index, source in enumerate(sources):
        block = [
            "Types: deb",
            f"URIs: {' '.join(uri.expanded for uri in source.uris)}",
            f"Suites: {' '.join(source.suites)}",
        ]
        if source.components:
            block.append(f"Components: {' '.join(source.components)}")
        block.append(f"Signed-By: {keyrings[index]}")
        blocks.append("\n".join(block) + "\n")
    return "\n".join(blocks)


def install_args(repo: AptRepo) -> list[str]:
    return [*repo.packages, *(ESSENTIAL_PATTERNS if repo.essential else ())]


# --- parsing apt's answers -----------------------------------------------------------------


def parse_control(text: str) -> list[dict[str, str]]:
    """Stanzas of a Debian control file (Packages, apt-cache show), continuation lines kept."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, ""
        elif line[0] in " \t" and last:
            current[last] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip()
            current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def parse_print_uris(text: str) -> list[tuple[str, str, int]]:
    """(url, archive file name, size) from `apt-get --print-uris` lines."""
    found = []
    for line in text.splitlines():
        if not line.startswith("'"):
            continue
        url, _, rest = line[1:].partition("' ")
        fields = rest.split()
        if len(fields) >= 2 and fields[0].endswith(".deb") and fields[1].isdigit():
            found.append((url, fields[0], int(fields[1])))
    return found


def closure(uris_text: str, show_text: str) -> list[DebRef]:
    """The closure as DebRefs: URIs from print-uris, SHA256 from the package index."""
    index: dict[tuple[str, str], dict[str, str]] = {}
    for stanza in parse_control(show_text):
        key = (stanza.get("Package", ""), stanza.get("Version", ""))
        if "SHA256" in stanza:
            index.setdefault(key, stanza)
    debs = []
    for url, archive_name, size in parse_print_uris(uris_text):
        package, version, _ = archive_name[: -len(".deb")].split("_")
        version = unquote(version)
        stanza = index.get((package, version))
        if stanza is None:
            raise AptError(f"apt-cache show did not describe {package} {version}")
        debs.append(
            DebRef(
                package=package,
                version=version,
                architecture=stanza.get("Architecture", "all"),
                url=url,
                archive_name=archive_name,
                size=size,
                sha256=stanza["SHA256"],
            )
        )
    return sorted(debs, key=lambda deb: deb.pool_name)


def raw_url(url: str, sources: tuple[AptSource, ...]) -> str:
    """`url` with its source's expanded URI put back as the spec wrote it (${VAR} kept)."""
    for source in sources:
        for uri in source.uris:
            base = uri.expanded.rstrip("/")
            if url.startswith(base + "/"):
                return uri.raw.rstrip("/") + url[len(base) :]
    return url


# --- keys ----------------------------------------------------------------------------------


def source_keyring(
    source: AptSource, cache: Path, staging: Path, fetcher: Fetcher, where: str
) -> Path:
    """A binary keyring holding exactly the key the source names by URL and fingerprint.

    Cached under `cache/keys/<fingerprint>.gpg`; fetched when missing. The fingerprint is
    checked with gpg: a key file whose primary key is another one fails the build.
    """
    key = source.signed_by
    assert key.url is not None and key.fingerprint is not None
    cached = cache / "keys" / f"{key.fingerprint}.gpg"
    if cached.is_file():
        with contextlib.suppress(SigningError):
            if key_fingerprints(cached) == [key.fingerprint]:
                return cached
    staging.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=staging, prefix="key-")) / "key"
    try:
        try:
            with fetcher.open(key.url.expanded) as (body, _), temp.open("wb") as out:
                shutil.copyfileobj(body, out)
        except (OSError, FetchError) as exc:
            raise AptError(f"{where}: cannot fetch the key {key.url.raw}: {exc}") from exc
        try:
            data = export_key(temp, key.fingerprint)
        except SigningError as exc:
            raise AptError(f"{where}: signed_by {key.url.raw}: {exc}") from exc
    finally:
        shutil.rmtree(temp.parent, ignore_errors=True)
    write_atomic(cached, data)
    return cached


# --- the container ------------------------------------------------------------------------


def docker_command(
    repo: AptRepo, etc: Path, archives: Path, lists: Path, out: Path, ca_bundle: Path | None
) -> list[str]:
    owner = f"{os.getuid()}:{os.getgid()}"
    command = [
        "docker",
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        "-e",
        f"LLMFLEET_OWNER={owner}",
        "-v",
        f"{etc}:/llmfleet/etc:ro",
        "-v",
        f"{archives}:/llmfleet/archives",
        "-v",
        f"{lists}:/llmfleet/lists",
        "-v",
        f"{out}:/llmfleet/out",
    ]
    if ca_bundle is not None:
        command += ["-v", f"{ca_bundle}:/llmfleet/ca-certificates.crt:ro"]
    return [*command, repo.image, "/llmfleet/etc/resolve.sh", *install_args(repo)]


def run_logged(command: list[str], log: Callable[[str], None] | None) -> tuple[int, list[str]]:
    """Run `command`, passing each output line to `log`; returns (exit code, all lines)."""
    lines: list[str] = []
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
    except FileNotFoundError:
        raise AptError(f"{command[0]} is not installed") from None
    assert process.stdout is not None
    with process:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if log is not None:
                log(lines[-1])
    return process.returncode, lines


def resolve(
    repo: AptRepo,
    cache: Path,
    staging: Path,
    fetcher: Fetcher,
    log: Callable[[str], None] | None,
) -> list[DebRef]:
    """Resolve and download `repo`'s closure in a container; the debs land in the cache.

    The cache keeps `apt/<repo>/archives` (the debs) and `apt/<repo>/lists` between builds.
    """
    where = f"apt repo {repo.name}"
    base = cache / "apt" / repo.name
    archives, lists = base / "archives", base / "lists"
    for folder in (archives, lists):
        folder.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=staging, prefix=f"apt-{repo.name}-"))
    try:
        etc, out = work / "etc", work / "out"
        for folder in ("sources.list.d", "preferences.d", "no-trusted/trusted.gpg.d", "keys"):
            (etc / folder).mkdir(parents=True)
        out.mkdir()
        keyrings: dict[int, str] = {}
        for index, source in enumerate(repo.sources):
            if source.signed_by.path is not None:
                keyrings[index] = source.signed_by.path
            else:
                keyring = source_keyring(source, cache, staging, fetcher, where)
                shutil.copyfile(keyring, etc / "keys" / f"source-{index}.gpg")
                keyrings[index] = f"/llmfleet/etc/keys/source-{index}.gpg"
        https = any(uri.expanded.startswith("https:") for s in repo.sources for uri in s.uris)
        ca_bundle = CA_BUNDLE if https and CA_BUNDLE.is_file() else None
        (etc / "apt.conf").write_text(render_apt_conf(repo, ca_bundle is not None))
        (etc / "sources.list.d" / "llmfleet.sources").write_text(
            render_sources(repo.sources, keyrings)
        )
        for empty in ("sources.list", "preferences"):
            (etc / empty).write_text("")
        (etc / "resolve.sh").write_text(RESOLVE_SCRIPT)
        # apt downloads as the unprivileged _apt user: it must read the keys and the config
        for path in [work, *work.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.chmod(out, 0o777)
        command = docker_command(repo, etc, archives, lists, out, ca_bundle)
        code, lines = run_logged(command, log)
        if code != 0:
            errors = [line for line in lines if line.startswith(("E:", "W:", "docker:"))]
            detail = "\n".join(errors or lines[-15:])
            raise AptError(f"{where}: apt in a container of {repo.image} failed:\n{detail}")
        uris = (out / "uris").read_text()
        show = (out / "show").read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    debs = closure(uris, show)
    if not debs:
        raise AptError(f"{where}: apt resolved no packages at all")
    prune_archives(archives, {deb.archive_name for deb in debs})
    return debs


def prune_archives(archives: Path, keep: set[str]) -> None:
    """Remove cached debs that are no longer in the closure."""
    for path in archives.glob("*.deb"):
        if path.name not in keep:
            path.unlink()


# --- the published repository --------------------------------------------------------------


def publish_debs(
    debs: list[DebRef],
    archives: Path,
    repo_dir: Path,
    staging: Path,
    hashes: HashCache,
    where: str,
) -> None:
    """Put the closure's debs into `repo_dir` (hard links when possible); remove stale debs."""
    names = [deb.pool_name for deb in debs]
    clash = sorted({name for name in names if names.count(name) > 1})
    if clash:
        raise AptError(f"{where}: two packages map to the file name {clash[0]}")
    repo_dir.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        source = archives / deb.archive_name
        if not source.is_file():
            raise AptError(f"{where}: apt did not download {deb.archive_name}")
        actual = hashes.sha256(source)
        if actual != deb.sha256:
            source.unlink()
            raise AptError(
                f"{where}: {deb.archive_name} has sha256 {actual}, the index says {deb.sha256}"
                " (removed from the cache; build again)"
            )
        dest = repo_dir / deb.pool_name
        if dest.is_file() and hashes.sha256(dest) == deb.sha256:
            continue
        place(source, dest, staging)
    for path in repo_dir.glob("*.deb"):
        if path.name not in names:
            path.unlink()


def sorted_packages(text: str) -> str:
    """apt-ftparchive's Packages with stanzas sorted by (Package, Version): deterministic."""
    stanzas = [stanza.strip("\n") for stanza in text.split("\n\n") if stanza.strip()]

    def key(stanza: str) -> tuple[str, str]:
        fields = parse_control(stanza)[0]
        return fields.get("Package", ""), fields.get("Filename", "")

    return "".join(f"{stanza}\n\n" for stanza in sorted(stanzas, key=key))


def _ftparchive(args: list[str], cwd: Path, where: str) -> str:
    try:
        result = subprocess.run(
            ["apt-ftparchive", *args], cwd=cwd, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise AptError("apt-ftparchive is not installed (Debian package apt-utils)") from None
    if result.returncode != 0:
        raise AptError(f"{where}: apt-ftparchive {args[-2]} failed: {result.stderr.strip()}")
    return result.stdout


def release_hashes(release: str) -> dict[str, tuple[str, int]]:
    """The SHA256 section of a Release file: {file: (sha256, size)}."""
    stanzas = parse_control(release)
    lines = stanzas[0].get("SHA256", "") if stanzas else ""
    found = {}
    for line in lines.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1].isdigit():
            found[fields[2]] = (fields[0], int(fields[1]))
    return found


def index_is_current(repo_dir: Path, packages: bytes, keyring: Path) -> bool:
    """True when Packages* hold `packages` and Release, InRelease, Release.gpg still verify."""
    if any(not (repo_dir / name).is_file() for name in INDEX_FILES):
        return False
    if (repo_dir / "Packages").read_bytes() != packages:
        return False
    release = repo_dir / "Release"
    hashes = release_hashes(release.read_text(errors="replace"))
    for name in ("Packages", "Packages.gz"):
        data = (repo_dir / name).read_bytes()
        if hashes.get(name) != (_sha256(data), len(data)):
            return False
    detached = gpgv_check(keyring, repo_dir / "Release.gpg", release)
    inline = gpgv_check(keyring, repo_dir / "InRelease")
    return detached.ok and inline.ok and inline.signed_text == release.read_bytes()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_index(
    repo: AptRepo,
    repo_dir: Path,
    signer: Signer,
    keyring: Path,
    ftparchive_db: Path,
    staging: Path,
    spec_name: str,
) -> bool:
    """Packages, Packages.gz, Release, InRelease, Release.gpg for the debs in `repo_dir`.

    Rewritten only when the Packages content changed or a signature no longer verifies with
    `keyring` (the bundle's public key). Returns True when something was written.
    """
    where = f"apt repo {repo.name}"
    ftparchive_db.parent.mkdir(parents=True, exist_ok=True)
    raw = _ftparchive(["--db", str(ftparchive_db), "packages", "."], repo_dir, where)
    packages = sorted_packages(raw).encode()
    if index_is_current(repo_dir, packages, keyring):
        return False
    staging.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=staging, prefix=f"index-{repo.name}-"))
    try:
        (work / "Packages").write_bytes(packages)
        (work / "Packages.gz").write_bytes(gzip.compress(packages, 9, mtime=0))
        options = {
            "Origin": "llmfleet",
            "Label": "llmfleet",
            "Suite": repo.name,
            "Codename": repo.name,
            "Architectures": repo.architecture,
            "Description": f"llmfleet bundle {spec_name}: {repo.name}",
        }
        args = []
        for field, value in options.items():
            args += ["-o", f"APT::FTPArchive::Release::{field}={value}"]
        release = _ftparchive([*args, "release", "."], work, where)
        (work / "Release").write_text(release)
        signer.clearsign(work / "Release", work / "InRelease")
        signer.sign_detached(work / "Release", work / "Release.gpg")
        for name in INDEX_FILES:
            os.chmod(work / name, 0o644)
            os.replace(work / name, repo_dir / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True


def log_to_stderr(prefix: str) -> Callable[[str], None]:
    def log(line: str) -> None:
        print(f"{prefix}{line}", file=sys.stderr, flush=True)

    return log
