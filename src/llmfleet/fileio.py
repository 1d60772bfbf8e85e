"""Small file helpers every part of the CLI shares: an atomic write and a secret-file reader."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half.

    The bytes go to a temporary file beside `path` (same filesystem), are flushed to disk,
    get `mode`, and the file is renamed into place; the folder is synced so the rename
    survives a crash. A failure leaves no temporary file behind. Missing folders are created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_secret(path: Path, what: str) -> str:
    """The one-word secret (a token, an API key) in `path`, surrounding white space removed.

    `what` names the secret in the messages. ValueError when the file cannot be read, is
    empty, or holds white space inside the secret. The secret itself is never in a message.
    """
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the {what} file {path} is not UTF-8 text") from None
    if not secret:
        raise ValueError(f"the {what} file {path} is empty")
    if any(char.isspace() for char in secret):
        raise ValueError(f"the {what} in {path} holds white space: it must be one word")
    return secret
