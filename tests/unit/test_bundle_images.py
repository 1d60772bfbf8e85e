"""Images in the bundle: what decides a rebuild, and the docker command lines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llmfleet.bundle.images import ImageError, docker_build_argv, ensure_image, inputs_digest
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
    first = inputs_digest(image, {"src": "a" * 64}, tmp_path / "ctx")
    assert inputs_digest(image, {"src": "a" * 64}, tmp_path / "ctx") == first
    assert inputs_digest(image, {"src": "b" * 64}, tmp_path / "ctx") != first
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nUSER 1\n")
    assert inputs_digest(image, {"src": "a" * 64}, tmp_path / "ctx") != first


def bundle_folders(tmp_path: Path) -> tuple[Path, Path, dict[str, Artifact]]:
    """The bundle's folder with the file `src` at files/s, the staging folder, the files."""
    output, staging = tmp_path / "out", tmp_path / "stage"
    (output / "files").mkdir(parents=True)
    staging.mkdir()
    (output / "files" / "s").write_text("source")
    return output, staging, {"src": Artifact("src", "file", "files/s", "a" * 64, 6, "file:///x")}


def sha(path: Path) -> str:
    return "sha-of-" + path.read_text()


def test_an_image_is_built_once_then_reused(tmp_path: Path) -> None:
    image = parsed(tmp_path)
    output, staging, files = bundle_folders(tmp_path)
    calls: list[list[str]] = []

    def docker(argv: list[str]) -> None:
        calls.append(argv)
        if argv[1] == "build":
            # the bundle's file is in the build context under its own name
            assert (Path(argv[-1]) / "s").read_text() == "source"
        if argv[1] == "save":
            Path(argv[3]).write_bytes(b"image archive")
            Path(argv[3]).chmod(0o600)  # as docker save leaves it

    first = ensure_image(image, output, staging, files, None, lambda _m: None, sha, docker)
    assert [argv[1] for argv in calls] == ["build", "save"]
    assert first.sha256 == "sha-of-image archive" and first.tag == image.tag
    archive = output / "images" / "engine.tar"
    assert archive.read_bytes() == b"image archive"
    assert archive.stat().st_mode & 0o777 == 0o644, "the mirror's nginx must be able to read it"
    again = ensure_image(image, output, staging, files, first.to_dict(), print, sha, docker)
    assert len(calls) == 2, "an unchanged image must not be rebuilt"
    assert again == first


# -- an execution environment: the context ansible-builder writes at build time ------------------

DEFINITION = "version: 3\nimages:\n  base_image:\n    name: debian:12\n"


def ee_parsed(tmp_path: Path, **changes: object):
    """An image entry whose context ansible-builder writes from ee/execution-environment.yml."""
    (tmp_path / "ee").mkdir(exist_ok=True)
    (tmp_path / "ee" / "execution-environment.yml").write_text(DEFINITION)
    changes = {"execution_environment": "ee/execution-environment.yml", **changes}
    data = image_spec(tmp_path, **changes)
    data["images"][0] = {k: v for k, v in data["images"][0].items() if v is not None}
    return parse_spec(data, {"BASE_IMAGE": "debian:12"}, str(tmp_path / "spec.yml")).images[0]


def test_an_execution_environment_entry_names_its_definition(tmp_path: Path) -> None:
    image = ee_parsed(tmp_path, context=None)
    assert image.execution_environment == (tmp_path / "ee" / "execution-environment.yml").resolve()
    assert (image.context, image.dockerfile) == (None, "Dockerfile")


EE_FILE = "execution_environment: must be an ansible-builder definition file relative to the spec"
CONTEXT_CASES = [
    ("both", {}, "execution_environment: give either context or execution_environment, not both"),
    ("missing file", {"context": None, "execution_environment": "ee/missing.yml"},
     f"{EE_FILE}, got 'ee/missing.yml'"),
    ("a folder", {"context": None, "execution_environment": "ee"}, f"{EE_FILE}, got 'ee'"),
    ("empty", {"context": None, "execution_environment": ""}, f"{EE_FILE}, got ''"),
    ("dockerfile", {"context": None, "dockerfile": "Containerfile"},
     "dockerfile: goes with context only: ansible-builder writes the Dockerfile of an "
     "execution_environment"),
    ("neither", {"context": None, "execution_environment": None},
     "context: is required (a folder relative to the spec), or give execution_environment "
     "(an ansible-builder definition file)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "problem"),
    [case[1:] for case in CONTEXT_CASES],
    ids=[case[0] for case in CONTEXT_CASES],
)
def test_an_image_needs_exactly_one_context_source(
    tmp_path: Path, changes: dict, problem: str
) -> None:
    with pytest.raises(SpecError) as error:
        ee_parsed(tmp_path, **changes)
    assert error.value.problems == [f"{tmp_path / 'spec.yml'}: images[0] (engine-image): {problem}"]


def fake_docker(calls: list[list[str]], seen: list[set[str]]):
    def docker(argv: list[str]) -> None:
        calls.append(argv)
        if argv[1] == "build":
            context = Path(argv[-1])
            seen.append({p.relative_to(context).as_posix() for p in context.rglob("*")})
        if argv[1] == "save":
            Path(argv[3]).write_bytes(b"image archive")

    return docker


def test_an_execution_environment_is_written_built_once_then_reused(tmp_path: Path) -> None:
    image = ee_parsed(tmp_path, context=None)
    output, staging, files = bundle_folders(tmp_path)
    calls: list[list[str]] = []
    seen: list[set[str]] = []
    docker = fake_docker(calls, seen)

    def ensure(known: dict | None) -> Artifact:
        return ensure_image(image, output, staging, files, known, lambda _m: None, sha, docker)

    first = ensure(None)
    assert [argv[1] for argv in calls] == ["build", "save"]
    # ansible-builder's context, with the bundle's file in it under its own name
    assert {"Dockerfile", "_build/scripts/introspect.py", "s"} <= seen[0]
    assert first.source == "ansible-builder ee/execution-environment.yml"
    assert not (staging / "context-engine-image").exists(), "the written context is removed"
    assert ensure(first.to_dict()) == first
    assert len(calls) == 2, "an unchanged definition must not rebuild the image"
    (tmp_path / "ee" / "execution-environment.yml").write_text(
        DEFINITION + "options:\n  workdir: /srv\n"
    )
    again = ensure(first.to_dict())
    assert [argv[1] for argv in calls] == ["build", "save"] * 2, "a changed definition rebuilds"
    assert again.inputs_sha256 != first.inputs_sha256


def test_an_execution_environment_without_ansible_builder_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = ee_parsed(tmp_path, context=None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python3"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    calls: list[list[str]] = []
    with pytest.raises(ImageError) as error:
        ensure_image(
            image, tmp_path, tmp_path / "stage", {}, None, print, str, fake_docker(calls, [])
        )
    assert str(error.value).startswith(
        "image engine-image: execution_environment needs ansible-builder 3, which is not "
        "installed: pip install ansible-builder"
    )
    assert calls == []


def test_a_definition_ansible_builder_refuses_is_named(tmp_path: Path) -> None:
    image = ee_parsed(tmp_path, context=None)
    (tmp_path / "ee" / "execution-environment.yml").write_text("version: 3\nbogus: 1\n")
    calls: list[list[str]] = []
    with pytest.raises(ImageError) as error:
        ensure_image(
            image, tmp_path, tmp_path / "stage", {}, None, print, str, fake_docker(calls, [])
        )
    message = str(error.value)
    assert message.startswith("image engine-image: ansible-builder create --file ")
    assert message.splitlines()[-1] == (
        "ansible_builder.exceptions.DefinitionError: Additional properties are not allowed "
        "('bogus' was unexpected)"
    )
    assert calls == []
    assert not (tmp_path / "stage" / "context-engine-image").exists()
