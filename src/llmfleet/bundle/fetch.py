"""Downloads and checksums: fetch to a temporary name, verify the sha256, then os.replace.

A failed or interrupted download never leaves a file at its final path: the bytes go to a
temporary file in a staging folder (on the same filesystem as the target), the sha256 is
checked, and only then is the file moved into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO
from urllib.parse import unquote, urlparse

from llmfleet import __version__

CHUNK = 1024 * 1024
USER_AGENT = f"llmfleet-bundle/{__version__}"


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


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to a temporary file beside `path`, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


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


class Progress:
    """A one-line progress bar on a terminal; silent when `stream` is None."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None) -> None:
        self.label = label if len(label) <= 40 else "..." + label[-37:]
        self.total = total
        self.stream = stream
        self.done = 0
        self.started = time.monotonic()
        self.shown = 0.0

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.stream is not None and now - self.shown >= 0.2:
            self.shown = now
            self._draw(now)

    def finish(self) -> None:
        if self.stream is not None:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        assert self.stream is not None
        rate = self.done / max(now - self.started, 1e-6) / 1e6
        mb = self.done / 1e6
        if self.total:
            share = min(self.done / self.total, 1.0)
            bar = "#" * int(share * 30)
            text = (
                f"\r{self.label:<40} [{bar:<30}] {share:4.0%} "
                f"{mb:7.1f}/{self.total / 1e6:.1f} MB {rate:6.1f} MB/s"
            )
        else:
            text = f"\r{self.label:<40} {mb:7.1f} MB {rate:6.1f} MB/s"
        self.stream.write(text)
        self.stream.flush()


def progress_stream(quiet: bool) -> TextIO | None:
    """stderr when it is a terminal and the user did not ask for quiet, else None."""
    return None if quiet or not sys.stderr.isatty() else sys.stderr


# --- downloads ---------------------------------------------------------------------------


@dataclass
class Fetcher:
    """Downloads URLs (https, http, file) with retries for transient faults.

    `fetches` counts every attempt to open a URL, so a test can prove a rebuild fetched nothing.
    """

    retries: int = 3
    timeout: float = 60.0
    backoff: float = 2.0
    progress: TextIO | None = None
    fetches: int = 0

    @contextlib.contextmanager
    def open(self, url: str) -> Iterator[tuple[BinaryIO, int | None]]:
        """The body of `url` and its length when known."""
        self.fetches += 1
        parsed = urlparse(url)
        if parsed.scheme == "file":
            path = Path(unquote(parsed.path))
            try:
                handle = path.open("rb")
            except OSError as exc:
                raise FetchError(f"{url}: {exc.strerror}") from exc
            with handle:
                yield handle, path.stat().st_size
            return
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            length = response.headers.get("Content-Length")
            yield response, int(length) if length and length.isdigit() else None

    def download(self, url: str, dest: Path, sha256: str, staging: Path, label: str) -> None:
        """Fetch `url` to `dest`, checked against `sha256`; nothing at `dest` if it fails."""
        last: Exception | None = None
        for attempt in range(1, self.retries + 1):
            try:
                self._download_once(url, dest, sha256, staging, label)
                return
            except ChecksumError:
                raise
            except (urllib.error.URLError, http.client.HTTPException, OSError, FetchError) as exc:
                last = exc
                if not _transient(exc) or attempt == self.retries:
                    break
                time.sleep(self.backoff * attempt)
        raise FetchError(f"{label}: download of {url} failed: {_describe(last)}") from last

    def _download_once(self, url: str, dest: Path, sha256: str, staging: Path, label: str) -> None:
        staging.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=staging, prefix="download-", suffix=".part")
        try:
            digest = hashlib.sha256()
            with os.fdopen(handle, "wb") as out, self.open(url) as (body, total):
                bar = Progress(label, total, self.progress)
                while block := body.read(CHUNK):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
                bar.finish()
                if total is not None and bar.done != total:
                    raise ShortRead(f"connection closed after {bar.done} of {total} bytes")
            actual = digest.hexdigest()
            if actual != sha256:
                raise ChecksumError(
                    f"{label}: {url} has sha256 {actual}, the spec expects {sha256}"
                )
            os.chmod(temp, 0o644)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


def _transient(exc: BaseException | None) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in (408, 429)
    if isinstance(exc, FetchError):
        return isinstance(exc, ShortRead)
    if isinstance(exc, FileNotFoundError | PermissionError):
        return False
    return isinstance(exc, urllib.error.URLError | http.client.HTTPException | OSError)


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} bytes"
    return str(exc) or type(exc).__name__


def cached_download(
    fetcher: Fetcher,
    url: str,
    sha256: str,
    downloads: Path,
    staging: Path,
    label: str,
    hashes: HashCache,
) -> Path:
    """The download of `url` in the content-addressed cache `downloads/<sha256>`.

    Fetched only when the cache lacks it or holds a file with another checksum.
    """
    cached = downloads / sha256
    if cached.is_file():
        if hashes.sha256(cached) == sha256:
            return cached
        cached.unlink()
    fetcher.download(url, cached, sha256, staging, label)
    return cached


# --- archives ----------------------------------------------------------------------------


def extract_member(archive: Path, member: str, staging: Path) -> tuple[Path, str, int]:
    """Copy `member` of a zip or tar `archive` to a temporary file in `staging`.

    Returns the file, its sha256 and size. The caller moves it into place (or deletes it).
    """
    staging.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=staging, prefix="extract-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, _open_member(archive, member) as body:
            digest = hashlib.sha256()
            size = 0
            while block := body.read(CHUNK):
                out.write(block)
                digest.update(block)
                size += len(block)
        os.chmod(temp, 0o644)
        return Path(temp), digest.hexdigest(), size
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def _open_member(archive: Path, member: str) -> Iterator[BinaryIO]:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            try:
                info = zipped.getinfo(member)
            except KeyError:
                raise FetchError(_no_member(archive, member, zipped.namelist())) from None
            if info.is_dir():
                raise FetchError(f"{archive.name}: member {member!r} is a directory")
            with zipped.open(info) as body:
                yield body  # type: ignore[misc]
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
        with body:
            yield body  # type: ignore[misc]


def _no_member(archive: Path, member: str, names: list[str]) -> str:
    base = member.rsplit("/", 1)[-1]
    near = [name for name in names if name.rsplit("/", 1)[-1] == base][:5]
    hint = f"; members with that name: {', '.join(near)}" if near else ""
    return f"{archive.name}: no member {member!r} ({len(names)} members){hint}"
