"""Wheel sets: pinned Python wheels a host installs with pip, offline and exactly.

For each `wheels:` set of the spec (see the docstring of llmfleet.bundle.spec) the builder

1. with ``project: true``, builds this project's wheel from a copy of its source
   (`PROJECT_FILES`), with SOURCE_DATE_EPOCH fixed: the same source gives the same bytes. The
   wheel is kept in ``<cache>/project/<sha256 of the source>/``, so unchanged source is not
   built again;
2. resolves the set's requirements, with the dependencies the project's wheel declares, with
   ``python -m pip download --only-binary :all:`` for the set's Python and platforms (and
   ``-c <constraints file>`` when the set names one): the whole closure, as wheels, into the
   content-addressed download cache (``<cache>/downloads/<sha256>``). What pip resolved is
   recorded in ``<cache>/wheels/<key>.json``, `key` being the sha256 of the set's Python, ABI,
   platforms, requirements and constraints' pins: an unchanged set is not downloaded again;
3. places each wheel at ``wheels/<set>/<file>`` (artifact ``wheel:<set>/<project>``, kind
   ``wheel``) and writes ``wheels/<set>/requirements.lock`` (artifact ``wheel-index:<set>``,
   kind ``wheel-index``): a header of two comments, then one ``name==version
   --hash=sha256:<hex>`` line per wheel, sorted by name. ``pip install --no-index
   --require-hashes -r requirements.lock --find-links wheels/<set>`` installs exactly these.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from llmfleet.bundle.fetch import Fetcher, FetchError, HashCache, place, sha256_file
from llmfleet.bundle.manifest import Artifact
from llmfleet.bundle.spec import WheelSet
from llmfleet.fileio import write_atomic

LOCK_NAME = "requirements.lock"
#: The project a set with `project: true` adds, and what its wheel is built from (the
#: package-dir folders and the readme of pyproject.toml's [tool.setuptools]).
PROJECT_NAME = "llmfleet"
PROJECT_FILES = ("pyproject.toml", "README.md", "src", "plugins/module_utils")
SKIPPED = ("__pycache__", ".cache", "build", "dist")
#: 1980-01-01, the earliest time a zip can hold: every file of the project's wheel has it.
SOURCE_DATE_EPOCH = "315532800"
#: The first line of a lock file; the rollback_receiver role reads the Python from it.
LOCK_HEADER = "# llmfleet wheel set {name}: python {python} ({abi}), platforms {platforms}"
LOCK_USAGE = (
    "# pip install --no-index --require-hashes -r requirements.lock --find-links <this folder>"
)


class WheelError(FetchError):
    """A wheel set cannot be built; the message names the set and what to do."""


@dataclass(frozen=True)
class Wheel:
    """One wheel of a set: its file name, normalized project name, version and checksum."""

    file: str
    name: str
    version: str
    sha256: str
    size: int


# --- pure functions: names, lock files, resolution keys -----------------------------------------


def canonical_name(name: str) -> str:
    """A project name as PEP 503 normalizes it: `Foo.Bar_baz` -> `foo-bar-baz`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel_name(file: str) -> tuple[str, str]:
    """(normalized project name, version) of a wheel's file name (PEP 427); ValueError when
    `file` is not one."""
    parts = file[: -len(".whl")].split("-") if file.endswith(".whl") else []
    if len(parts) not in (5, 6) or not all(parts):
        raise ValueError(f"{file!r} is not the file name of a wheel")
    return canonical_name(parts[0]), parts[1]


def render_lock(wheelset: WheelSet, wheels: Iterable[Wheel]) -> bytes:
    """requirements.lock of `wheels`: the header, then `name==version --hash=sha256:<hex>`
    for each, sorted by name; ValueError when a project comes twice."""
    ordered = sorted(wheels, key=lambda wheel: wheel.name)
    names = [wheel.name for wheel in ordered]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"wheel set {wheelset.name}: more than one wheel of {', '.join(twice)}")
    header = LOCK_HEADER.format(
        name=wheelset.name,
        python=wheelset.python,
        abi=wheelset.abi,
        platforms=", ".join(wheelset.platforms),
    )
    lines = [header, LOCK_USAGE]
    lines += [f"{w.name}=={w.version} --hash=sha256:{w.sha256}" for w in ordered]
    return ("\n".join(lines) + "\n").encode()


def resolution_key(wheelset: WheelSet, requirements: Iterable[str]) -> str:
    """What a resolution depends on, as a sha256: Python, ABI, platforms, requirements and
    the pins of the constraints file (a set without one keeps the key it had before)."""
    inputs: dict[str, Any] = {
        "python": wheelset.python,
        "implementation": "cp",
        "abi": wheelset.abi,
        "platforms": list(wheelset.platforms),
        "requirements": sorted(set(requirements)),
    }
    if wheelset.constraints is not None:
        inputs["constraints"] = list(wheelset.constraint_pins)
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def declared_dependencies(metadata: str) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA, without those of an extra (`dev`)."""
    headers = HeaderParser().parsestr(metadata)
    return [
        " ".join(line.split())
        for line in headers.get_all("Requires-Dist") or []
        if not re.search(r"\bextra\s*==", line.partition(";")[2])
    ]


def wheel_metadata(wheel: Path) -> str:
    """The METADATA file of a wheel (its `<name>-<version>.dist-info/METADATA`)."""
    with zipfile.ZipFile(wheel) as zipped:
        names = [n for n in zipped.namelist() if re.match(r"^[^/]+\.dist-info/METADATA$", n)]
        if len(names) != 1:
            raise ValueError(f"{wheel.name} has {len(names)} dist-info/METADATA files, not one")
        return zipped.read(names[0]).decode("utf-8")


# --- the project's own wheel ---------------------------------------------------------------------


def find_project(start: Path | None = None) -> Path | None:
    """The llmfleet source checkout the running code comes from (a folder above it with the
    pyproject.toml of llmfleet), or None when it runs from an installed wheel."""
    here = (start or Path(__file__)).resolve()
    for folder in here.parents:
        if is_project(folder):
            return folder
    return None


def is_project(folder: Path) -> bool:
    """Whether `folder` holds the pyproject.toml of the llmfleet project."""
    try:
        text = (folder / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    # the [project] table (up to the next table) names the project
    table = re.search(r"^\[project\][ \t]*\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    return bool(table and re.search(rf'^name\s*=\s*"{PROJECT_NAME}"\s*$', table.group(1), re.M))


def project_files(root: Path) -> list[str]:
    """The project's files its wheel is built from (`PROJECT_FILES`, without caches and
    earlier build output), as sorted relative POSIX paths."""
    found: list[str] = []
    for top in PROJECT_FILES:
        path = root / top
        if path.is_file():
            found.append(top)
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED and not d.endswith(".egg-info"))
            found += [
                (Path(folder) / name).relative_to(root).as_posix()
                for name in files
                if not name.endswith((".pyc", ".pyo"))
            ]
    return sorted(found)


def source_digest(root: Path, files: list[str]) -> str:
    """A sha256 of the project's files: their paths, executable bits and contents."""
    digest = hashlib.sha256()
    for relative in files:
        path = root / relative
        executable = "x" if os.access(path, os.X_OK) else "-"
        digest.update(f"{relative}\0{executable}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=env)


def pip_wheel_argv(python: str, source: Path, folder: Path) -> list[str]:
    """`pip wheel` of the project's copy at `source` alone: no index, no dependencies, the
    builder's own setuptools (no build isolation, so nothing is fetched)."""
    return [
        *(python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"),
        *("--disable-pip-version-check", "--quiet", "--wheel-dir", str(folder), str(source)),
    ]


def build_project_wheel(
    root: Path,
    cache: Path,
    python: str = sys.executable,
    run: Callable[[list[str], dict[str, str]], subprocess.CompletedProcess[str]] = _run,
) -> Path:
    """The project's wheel, from `<cache>/project/<source digest>/` or built from a copy of
    its source there (the folder appears complete or not at all); a WheelError names what
    failed."""
    files = project_files(root)
    if "pyproject.toml" not in files:
        raise WheelError(f"{root}: no pyproject.toml: not the llmfleet project")
    kept = cache / "project" / source_digest(root, files)
    built = sorted(kept.glob("*.whl")) if kept.is_dir() else []
    if len(built) == 1:
        return built[0]
    kept.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=kept.parent, prefix=".build-"))
    try:
        source = work / "source"
        for relative in files:
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / relative, source / relative)
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PYTHONDONTWRITEBYTECODE": "1"}
        result = run(pip_wheel_argv(python, source, work / "dist"), env)
        wheels = sorted((work / "dist").glob("*.whl")) if (work / "dist").is_dir() else []
        if result.returncode != 0 or len(wheels) != 1:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise WheelError(
                f"pip wheel of the {PROJECT_NAME} project in {root} failed "
                f"(exit {result.returncode}, {len(wheels)} wheels; the builder's Python needs "
                f"setuptools and wheel: .venv/bin/pip install -e '.[dev]'):\n{tail}"
            )
        shutil.rmtree(kept, ignore_errors=True)
        os.chmod(wheels[0], 0o644)
        os.replace(wheels[0].parent, kept)
        for older in kept.parent.iterdir():  # the wheels of earlier source: rebuilt if needed
            if older != kept and re.fullmatch(r"[0-9a-f]{64}", older.name):
                shutil.rmtree(older, ignore_errors=True)
        return kept / wheels[0].name
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- resolution ----------------------------------------------------------------------------------


def _read_record(record: Path) -> list[dict[str, Any]] | None:
    """The wheels a cached resolution lists, or None when it is missing or not one."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(record.read_text())
        wheels = data.get("wheels") if isinstance(data, dict) else None
        if isinstance(wheels, list) and all(
            isinstance(w, dict)
            and isinstance(w.get("file"), str)
            and isinstance(w.get("sha256"), str)
            and isinstance(w.get("size"), int)
            for w in wheels
        ):
            return wheels
    return None


def resolve(
    wheelset: WheelSet,
    requirements: list[str],
    fetcher: Fetcher,
    cache: Path,
    hashes: HashCache,
    say: Callable[[str], None],
) -> list[tuple[Wheel, Path]]:
    """The wheels of the closure of `requirements` for the set, each with its file in
    `<cache>/downloads`: from the cached resolution when every file is still there, else
    downloaded with pip (and the resolution recorded)."""
    label = f"wheel set {wheelset.name}"
    downloads = cache / "downloads"
    record = cache / "wheels" / f"{resolution_key(wheelset, requirements)}.json"
    listed = _read_record(record)
    if listed is not None:
        found = []
        for entry in listed:
            path = downloads / entry["sha256"]
            if not path.is_file() or hashes.sha256(path) != entry["sha256"]:
                break
            name, version = parse_wheel_name(entry["file"])
            wheel = Wheel(entry["file"], name, version, entry["sha256"], entry["size"])
            found.append((wheel, path))
        else:
            return found
    say(
        f"{label}: resolving {len(requirements)} requirements with pip for Python "
        f"{wheelset.python} on {', '.join(wheelset.platforms)}"
    )
    downloads.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=downloads, prefix=".pip-"))
    try:
        fetcher.pip_download_wheels(wheelset, requirements, folder, label)
        files = sorted(path.name for path in folder.iterdir())
        refused = [name for name in files if not name.endswith(".whl")]
        if refused:
            raise WheelError(
                f"{label}: pip download gave files that are not wheels: {', '.join(refused)} "
                "(a host cannot build them)"
            )
        if not files:
            raise WheelError(f"{label}: pip download gave no wheel")
        resolved = []
        for file in files:
            try:
                name, version = parse_wheel_name(file)
            except ValueError as exc:
                raise WheelError(f"{label}: {exc}") from None
            path = folder / file
            sha256, size = sha256_file(path), path.stat().st_size
            os.chmod(path, 0o644)
            os.replace(path, downloads / sha256)
            resolved.append((Wheel(file, name, version, sha256, size), downloads / sha256))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    entries = [{"file": w.file, "sha256": w.sha256, "size": w.size} for w, _ in resolved]
    document = {
        "set": wheelset.name,
        "requirements": sorted(set(requirements)),
        "constraints": list(wheelset.constraint_pins),
        "wheels": entries,
    }
    record.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(record, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    return resolved


# --- the set in the bundle -----------------------------------------------------------------------


@dataclass
class WheelContext:
    """What `ensure_wheel_set` needs of the build: folders, the fetcher, the hash cache."""

    output: Path
    cache: Path
    staging: Path
    fetcher: Fetcher
    hashes: HashCache
    say: Callable[[str], None]
    #: the llmfleet source a wheel set with `project: true` builds its wheel from
    project: Path | None


def ensure_wheel_set(wheelset: WheelSet, ctx: WheelContext) -> list[Artifact]:
    """The set's wheels and requirements.lock in the bundle, and their artifacts."""
    label = f"wheel set {wheelset.name}"
    requirements = list(wheelset.requirements)
    own: list[tuple[Wheel, Path]] = []
    if wheelset.project:
        if ctx.project is None:
            raise WheelError(f"{label}: project: true, but the llmfleet project was not found")
        built = build_project_wheel(ctx.project, ctx.cache, ctx.fetcher.python)
        name, version = parse_wheel_name(built.name)
        try:
            requirements += declared_dependencies(wheel_metadata(built))
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise WheelError(f"{label}: the project's wheel {built.name}: {exc}") from None
        sha256, size = ctx.hashes.sha256(built), built.stat().st_size
        own.append((Wheel(built.name, name, version, sha256, size), built))
    resolved = resolve(wheelset, requirements, ctx.fetcher, ctx.cache, ctx.hashes, ctx.say)
    if own and any(wheel.name == own[0][0].name for wheel, _ in resolved):
        raise WheelError(
            f"{label}: pip resolved a {own[0][0].name} wheel from the index as well as the "
            "project's own: remove it from the requirements"
        )
    artifacts = []
    for wheel, path in [*resolved, *own]:
        relative = f"{wheelset.folder}/{wheel.file}"
        target = ctx.output / relative
        if not (target.is_file() and ctx.hashes.sha256(target) == wheel.sha256):
            place(path, target, ctx.staging)
        source = (
            f"generated: pip wheel of the {PROJECT_NAME} project"
            if own and wheel is own[0][0]
            else f"pypi: {wheel.name}=={wheel.version} (wheel, resolved by pip for the set)"
        )
        artifacts.append(
            Artifact(
                name=f"wheel:{wheelset.name}/{wheel.name}",
                kind="wheel",
                path=relative,
                sha256=wheel.sha256,
                size=wheel.size,
                source=source,
            )
        )
    try:
        lock = render_lock(wheelset, [wheel for wheel, _ in [*resolved, *own]])
    except ValueError as exc:
        raise WheelError(str(exc)) from None
    lock_path = ctx.output / wheelset.folder / LOCK_NAME
    if not lock_path.is_file() or lock_path.read_bytes() != lock:
        write_atomic(lock_path, lock)
    artifacts.append(
        Artifact(
            name=f"wheel-index:{wheelset.name}",
            kind="wheel-index",
            path=f"{wheelset.folder}/{LOCK_NAME}",
            sha256=hashlib.sha256(lock).hexdigest(),
            size=len(lock),
            source=f"generated: the pins and sha256 of every wheel in {wheelset.folder}",
        )
    )
    ctx.say(
        f"{label}: {len(resolved) + len(own)} wheels, "
        f"{sum(w.size for w, _ in [*resolved, *own]) / 1e6:.1f} MB"
    )
    return artifacts
