"""Container images in the bundle: built on the connected side, carried as `docker save` archives.

The build context is a copy of a committed folder (`context:`), or what `ansible-builder create`
writes from an execution environment's definition (`execution_environment:`), written into the
staging folder on every build (it takes a fraction of a second), so a generated context is never
committed and never stale. The bundle files are then copied in and `docker build` runs there.

An image is rebuilt only when its inputs change: the Dockerfile and every file of the build
context (for an execution environment: of the context ansible-builder writes, so a change to the
definition, its requirements, bindep or additional build files, or an ansible-builder that writes
another context, rebuilds it, and anything else in the definition's folder does not), the build
arguments (expanded) and the tag, and the bundle files copied into the context. Their digest is
`inputs_sha256` in the manifest, so a host (or a reader) can tell which inputs made the archive.
The archive is written under a temporary name and moved into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from llmfleet.bundle.manifest import Artifact
from llmfleet.bundle.spec import ImageEntry

Runner = Callable[[list[str]], None]


class ImageError(Exception):
    """An image could not be built or saved; the message names the image."""


def inputs_digest(entry: ImageEntry, file_sha256: Mapping[str, str], context: Path) -> str:
    """sha256 over everything that decides the image: context files, args, tag, bundle files.

    `context` is the build context `write_context` wrote, before the bundle files go in.
    """
    digest = hashlib.sha256()

    def add(*parts: str) -> None:
        for part in parts:
            digest.update(part.encode())
            digest.update(b"\0")

    add("tag", entry.tag, "dockerfile", entry.dockerfile)
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        add("context", path.relative_to(context).as_posix())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for name, _raw, expanded in entry.build_args:
        add("arg", name, expanded)
    for name in entry.files:
        add("file", name, file_sha256[name])
    return digest.hexdigest()


def ansible_builder(entry: ImageEntry) -> str:
    """The ansible-builder beside the running Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "ansible-builder"
    found = str(beside) if beside.is_file() else shutil.which("ansible-builder")
    if found is None:
        raise ImageError(
            f"image {entry.name}: execution_environment needs ansible-builder 3, which is not "
            "installed: pip install ansible-builder (pyproject.toml's dev extra pins it; "
            "scripts/dev.sh installs it into .venv)"
        )
    return found


def write_context(entry: ImageEntry, context: Path) -> None:
    """The entry's build context at `context` (replaced): a copy of its committed folder, or
    what `ansible-builder create` writes from its execution environment definition."""
    shutil.rmtree(context, ignore_errors=True)
    if entry.execution_environment is None:
        assert entry.context is not None, "an image entry has a context or a definition"
        shutil.copytree(entry.context, context)
        return
    argv = [ansible_builder(entry), "create", "--file", str(entry.execution_environment)]
    argv += ["--context", str(context), "--output-filename", entry.dockerfile]
    try:
        result = subprocess.run(argv, check=False, capture_output=True, text=True)
    except OSError as exc:
        raise ImageError(f"image {entry.name}: cannot run {argv[0]}: {exc.strerror}") from None
    if result.returncode != 0 or not (context / entry.dockerfile).is_file():
        lines = (result.stdout + result.stderr).strip().splitlines()
        # ansible-builder ends with its DefinitionError, after a traceback and its whole schema
        errors = [i for i, line in enumerate(lines) if line.startswith("ansible_builder.")]
        tail = "\n".join(lines[errors[-1] :] if errors else lines[-25:])
        raise ImageError(
            f"image {entry.name}: ansible-builder create --file {entry.execution_environment} "
            f"failed ({result.returncode}):\n{tail}"
        )


def source_of(entry: ImageEntry) -> str:
    """How the manifest names what the image was built from."""
    if entry.execution_environment is not None:
        definition = entry.execution_environment
        return f"ansible-builder {definition.parent.name}/{definition.name}"
    assert entry.context is not None, "an image entry has a context or a definition"
    return f"docker build {entry.context.name}/{entry.dockerfile}"


def docker_build_argv(entry: ImageEntry, context: Path) -> list[str]:
    argv = ["docker", "build", "--pull=false", "--tag", entry.tag]
    argv += ["--file", str(context / entry.dockerfile)]
    for name, _raw, expanded in entry.build_args:
        argv += ["--build-arg", f"{name}={expanded}"]
    return [*argv, str(context)]


def run_docker(argv: list[str]) -> None:
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise ImageError(f"{' '.join(argv[:3])} failed ({result.returncode}):\n{tail}")


def ensure_image(
    entry: ImageEntry,
    output: Path,
    staging: Path,
    files: Mapping[str, Artifact],
    known: Mapping[str, object] | None,
    say: Callable[[str], None],
    sha256_of: Callable[[Path], str],
    run: Runner = run_docker,
) -> Artifact:
    """The image's archive at its dest, built and saved only when its inputs changed."""
    context = staging / f"context-{entry.name}"
    try:
        write_context(entry, context)
        file_sha256 = {name: files[name].sha256 for name in entry.files}
        digest = inputs_digest(entry, file_sha256, context)
        dest = output / entry.dest
        artifact = Artifact.unchecked(
            entry.name, "image", entry.dest, source_of(entry), tag=entry.tag, inputs_sha256=digest
        )
        if (
            known
            and known.get("inputs_sha256") == digest
            and dest.is_file()
            and sha256_of(dest) == known.get("sha256")
        ):
            say(f"image {entry.name} ({entry.tag}): inputs unchanged, archive reused")
            return artifact.with_checksum(str(known["sha256"]), dest.stat().st_size)
        for name in entry.files:
            shutil.copy2(output / files[name].path, context / Path(files[name].path).name)
        say(f"building image {entry.name} ({entry.tag}): docker build, this can take minutes")
        run(docker_build_argv(entry, context))
        temp = staging / f"{entry.name}.tar"
        run(["docker", "save", "--output", str(temp), entry.tag])
        temp.chmod(0o644)  # docker save writes 0600; the mirror's web server must read it
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, dest)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return artifact.with_checksum(sha256_of(dest), dest.stat().st_size)
