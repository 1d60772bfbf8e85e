"""llmfleet.fileio: the one atomic write and the one secret-file reader of the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.fileio import read_secret, write_atomic


def test_write_atomic_creates_replaces_and_sets_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "state.json"
    write_atomic(target, b"one\n")
    assert target.read_bytes() == b"one\n" and target.stat().st_mode & 0o777 == 0o644
    write_atomic(target, b"two\n", mode=0o600)
    assert target.read_bytes() == b"two\n" and target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]  # no temporary left


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


@pytest.mark.parametrize(
    ("content", "what", "problem"),
    [
        (b"  s3cret-token\n", "token", None),
        (b"\n \n", "API key", "the API key file {path} is empty"),
        (b"two words\n", "token", "the token in {path} holds white space: it must be one word"),
        (b"\xff\xfe\n", "token", "the token file {path} is not UTF-8 text"),
        (None, "API key", "cannot read the API key file {path}: No such file or directory"),
    ],
)
def test_read_secret(tmp_path: Path, content: bytes | None, what: str, problem: str | None) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
    if problem is None:
        assert read_secret(path, what) == "s3cret-token"
        return
    with pytest.raises(ValueError) as caught:
        read_secret(path, what)
    assert str(caught.value) == problem.format(path=path)


def test_read_secret_never_shows_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("sk-part-one sk-part-two\n")
    with pytest.raises(ValueError) as caught:
        read_secret(path, "token")
    assert "sk-part" not in str(caught.value)
