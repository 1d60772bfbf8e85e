"""Container images in the bundle: built on the connected side, carried as `docker save` archives.

An image is rebuilt only when its inputs change: the Dockerfile and every file of the build
context, the build arguments (expanded) and the tag, and the bundle files copied into the
context. Their digest is `inputs_sha256` in the manifest, so a host (or a reader) can tell which
inputs made the archive. The archive is written under a temporary name and moved into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from llmfleet.bundle.manifest import Artifact
from llmfleet.bundle.spec import ImageEntry

Runner = Callable[[list[str]], None]


class ImageError(Exception):
    """An image could not be built or saved; the message names the image."""


def inputs_digest(entry: ImageEntry, file_sha256: Mapping[str, str]) -> str:
    """sha256 over everything that decides the image: context files, args, tag, bundle files."""
    digest = hashlib.sha256()

    def add(*parts: str) -> None:
        for part in parts:
            digest.update(part.encode())
            digest.update(b"\0")

    add("tag", entry.tag, "dockerfile", entry.dockerfile)
    for path in sorted(p for p in entry.context.rglob("*") if p.is_file()):
        add("context", path.relative_to(entry.context).as_posix())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for name, _raw, expanded in entry.build_args:
        add("arg", name, expanded)
    for name in entry.files:
        add("file", name, file_sha256[name])
    return digest.hexdigest()


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
    digest = inputs_digest(entry, {name: files[name].sha256 for name in entry.files})
    dest = output / entry.dest
    source = f"docker build {entry.context.name}/{entry.dockerfile}"
    artifact = Artifact.unchecked(
        entry.name, "image", entry.dest, source, tag=entry.tag, inputs_sha256=digest
    )
    if (
        known
        and known.get("inputs_sha256") == digest
        and dest.is_file()
        and sha256_of(dest) == known.get("sha256")
    ):
        return artifact.with_checksum(str(known["sha256"]), dest.stat().st_size)
    context = staging / f"context-{entry.name}"
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(entry.context, context)
    for name in entry.files:
        shutil.copy2(output / files[name].path, context / Path(files[name].path).name)
    say(f"building image {entry.name} ({entry.tag}): docker build, this can take minutes")
    try:
        run(docker_build_argv(entry, context))
        temp = staging / f"{entry.name}.tar"
        run(["docker", "save", "--output", str(temp), entry.tag])
        temp.chmod(0o644)  # docker save writes 0600; the mirror's web server must read it
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, dest)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return artifact.with_checksum(sha256_of(dest), dest.stat().st_size)
