"""Images in the bundle: what decides a rebuild, and the docker command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.bundle.images import docker_build_argv, ensure_image, inputs_digest
from llmfleet.bundle.manifest import Artifact
from llmfleet.bundle.spec import SpecError, parse_spec


def image_spec(tmp_path: Path, **changes: object) -> dict:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text("FROM scratch\n")
    entry = {
        "name": "engine-image",
        "tag": "llmfleet/llama-server:1-cpu",
        "context": "ctx",
        "files": ["src"],
        "build_args": {"BASE": "${BASE_IMAGE}"},
        "dest": "images/engine.tar",
        **changes,
    }
    return {
        "name": "t",
        "files": [
            {"name": "src", "url": "file:///x/src.tar.gz", "sha256": "a" * 64, "dest": "files/s"}
        ],
        "images": [entry],
    }


def parsed(tmp_path: Path, **changes: object):
    spec = parse_spec(
        image_spec(tmp_path, **changes), {"BASE_IMAGE": "debian:12"}, str(tmp_path / "spec.yml")
    )
    return spec.images[0]


def test_an_image_entry_resolves_its_context_and_expands_its_args(tmp_path: Path) -> None:
    image = parsed(tmp_path)
    assert image.context == (tmp_path / "ctx").resolve()
    assert image.build_args == (("BASE", "${BASE_IMAGE}", "debian:12"),)
    assert docker_build_argv(image, Path("/stage")) == [
        "docker",
        "build",
        "--pull=false",
        "--tag",
        "llmfleet/llama-server:1-cpu",
        "--file",
        "/stage/Dockerfile",
        "--build-arg",
        "BASE=debian:12",
        "/stage",
    ]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"files": ["nope"]}, "'nope' is not a file of this spec"),
        ({"dest": "files/engine.tar"}, "must be under images/"),
        ({"context": "missing"}, "must be a folder relative to the spec"),
        ({"tag": "Bad Tag"}, "must be an image reference"),
        ({"build_args": {"X": "${UNSET}"}}, "UNSET is not set"),
    ],
)
def test_bad_image_entries_are_named(tmp_path: Path, changes: dict, fragment: str) -> None:
    with pytest.raises(SpecError) as error:
        parsed(tmp_path, **changes)
    assert any(fragment in problem for problem in error.value.problems), error.value.problems


def test_the_digest_follows_every_input(tmp_path: Path) -> None:
    image = parsed(tmp_path)
    first = inputs_digest(image, {"src": "a" * 64})
    assert inputs_digest(image, {"src": "a" * 64}) == first
    assert inputs_digest(image, {"src": "b" * 64}) != first
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nUSER 1\n")
    assert inputs_digest(image, {"src": "a" * 64}) != first


def test_an_image_is_built_once_then_reused(tmp_path: Path) -> None:
    image = parsed(tmp_path)
    output, staging = tmp_path / "out", tmp_path / "stage"
    (output / "files").mkdir(parents=True)
    staging.mkdir()
    (output / "files" / "s").write_text("source")
    files = {"src": Artifact("src", "file", "files/s", "a" * 64, 6, "file:///x")}
    calls: list[list[str]] = []

    def docker(argv: list[str]) -> None:
        calls.append(argv)
        if argv[1] == "build":
            # the bundle's file is in the build context under its own name
            assert (Path(argv[-1]) / "s").read_text() == "source"
        if argv[1] == "save":
            Path(argv[3]).write_bytes(b"image archive")
            Path(argv[3]).chmod(0o600)  # as docker save leaves it

    def sha(path: Path) -> str:
        return "sha-of-" + path.read_text()

    first = ensure_image(image, output, staging, files, None, lambda _m: None, sha, docker)
    assert [argv[1] for argv in calls] == ["build", "save"]
    assert first.sha256 == "sha-of-image archive" and first.tag == image.tag
    archive = output / "images" / "engine.tar"
    assert archive.read_bytes() == b"image archive"
    assert archive.stat().st_mode & 0o777 == 0o644, "the mirror's nginx must be able to read it"
    again = ensure_image(image, output, staging, files, first.to_dict(), print, sha, docker)
    assert len(calls) == 2, "an unchanged image must not be rebuilt"
    assert again == first
