"""Wheel sets: the lock file, pip's invocation, and whole builds against a local wheel index.

pip runs for real (`python -m pip download` and `pip wheel`), offline: PIP_NO_INDEX and
PIP_FIND_LINKS point it at a folder of small wheels made here, and the project whose wheel a
set with `project: true` builds is a tiny llmfleet in a temporary folder.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from helpers import wheel

from llmfleet.bundle.build import BuildError, BuildResult, build_bundle
from llmfleet.bundle.fetch import Fetcher, FetchError, HashCache, pip_wheels_argv
from llmfleet.bundle.spec import WheelSet, load_spec, parse_spec
from llmfleet.bundle.verify import verify_bundle
from llmfleet.bundle.wheels import (
    PROJECT_FILES,
    Wheel,
    build_project_wheel,
    canonical_name,
    declared_dependencies,
    find_project,
    is_project,
    parse_wheel_name,
    project_files,
    render_lock,
    resolution_key,
    resolve,
)

REPO = Path(__file__).resolve().parents[2]
needs_gpg = pytest.mark.skipif(
    not (shutil.which("gpg") and shutil.which("gpgv") and shutil.which("gpgconf")),
    reason="gpg, gpgv or gpgconf is not installed: every bundle is signed",
)
CONTROL = WheelSet("control", "3.11", ("manylinux2014_x86_64",), ("ansible-core==2.19.14",))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def a_wheel(name: str, version: str, sha256: str = "", size: int = 1) -> Wheel:
    file = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    return Wheel(file, canonical_name(name), version, sha256 or sha(file.encode()), size)


# --- the lock file -------------------------------------------------------------------------------


def test_the_lock_pins_every_wheel_exactly_with_its_hash_sorted_by_name() -> None:
    wheels = [a_wheel("pyyaml", "6.0.4"), a_wheel("ansible-core", "2.19.14"), a_wheel("cffi", "2")]
    text = render_lock(CONTROL, wheels).decode()
    assert text.splitlines() == [
        "# llmfleet wheel set control: python 3.11 (cp311), platforms manylinux2014_x86_64",
        "# pip install --no-index --require-hashes -r requirements.lock --find-links <this folder>",
        f"ansible-core==2.19.14 --hash=sha256:{wheels[1].sha256}",
        f"cffi==2 --hash=sha256:{wheels[2].sha256}",
        f"pyyaml==6.0.4 --hash=sha256:{wheels[0].sha256}",
    ]
    assert text.endswith("\n")
    # the same wheels in any order: the same bytes
    assert render_lock(CONTROL, reversed(wheels)) == render_lock(CONTROL, wheels)


def test_the_lock_refuses_two_wheels_of_one_project() -> None:
    with pytest.raises(ValueError, match="wheel set control: more than one wheel of pyyaml"):
        render_lock(CONTROL, [a_wheel("PyYAML", "6.0.4"), a_wheel("pyyaml", "6.0.3")])


def test_the_lock_names_several_platforms() -> None:
    both = WheelSet("x", "3.12", ("manylinux_2_28_x86_64", "manylinux2014_x86_64"), ("a==1",))
    first = render_lock(both, [a_wheel("a", "1")]).decode().splitlines()[0]
    assert first == (
        "# llmfleet wheel set x: python 3.12 (cp312), platforms manylinux_2_28_x86_64, "
        "manylinux2014_x86_64"
    )


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("ansible_core-2.19.14-py3-none-any.whl", ("ansible-core", "2.19.14")),
        ("PyYAML-6.0.4-cp311-cp311-manylinux2014_x86_64.whl", ("pyyaml", "6.0.4")),
        (
            "charset_normalizer-3.5.3-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.whl",
            ("charset-normalizer", "3.5.3"),
        ),
        ("pkg-1.0-1build-py3-none-any.whl", ("pkg", "1.0")),  # with a build tag
    ],
)
def test_a_wheel_file_name_gives_its_project_and_version(
    file: str, expected: tuple[str, str]
) -> None:
    assert parse_wheel_name(file) == expected


@pytest.mark.parametrize("file", ["pkg-1.0.tar.gz", "pkg-1.0-py3.whl", "--py3-none-any.whl"])
def test_what_is_not_a_wheel_file_name_is_refused(file: str) -> None:
    with pytest.raises(ValueError, match="is not the file name of a wheel"):
        parse_wheel_name(file)


def test_declared_dependencies_leave_out_the_extras() -> None:
    metadata = (
        "Metadata-Version: 2.1\nName: llmfleet\nVersion: 0.1.0\n"
        "Requires-Dist: PyYAML==6.0.4\n"
        'Requires-Dist: tomli==2.0;  python_version < "3.11"\n'
        'Requires-Dist: ansible==12.3.0; extra == "dev"\n'
        "Requires-Dist: pytest==9.2.0 ; extra=='dev'\n"
        "\nThe readme.\n"
    )
    assert declared_dependencies(metadata) == [
        "PyYAML==6.0.4",
        'tomli==2.0; python_version < "3.11"',
    ]


def test_the_resolution_key_follows_python_platforms_and_requirements() -> None:
    key = resolution_key(CONTROL, ["b==1", "a==1"])
    assert key == resolution_key(CONTROL, ["a==1", "b==1", "a==1"])  # order and repeats: same
    assert key == resolution_key(
        WheelSet("other-name", "3.11", CONTROL.platforms), ["a==1", "b==1"]
    )
    assert key != resolution_key(CONTROL, ["a==1", "b==2"])
    assert key != resolution_key(WheelSet("control", "3.12", CONTROL.platforms), ["a==1", "b==1"])
    assert key != resolution_key(WheelSet("control", "3.11", ("linux_x86_64",)), ["a==1", "b==1"])


def test_the_resolution_key_follows_the_constraints_pins_not_where_the_file_is() -> None:
    def held(path: str, *pins: str) -> WheelSet:
        return WheelSet("control", "3.11", CONTROL.platforms, (), False, Path(path), pins)

    key = resolution_key(held("/a/c.txt", "cffi==2.1.1"), ["a==1"])
    assert key == resolution_key(held("/elsewhere/c.txt", "cffi==2.1.1"), ["a==1"])
    assert key != resolution_key(held("/a/c.txt", "cffi==2.1.2"), ["a==1"])
    assert key != resolution_key(held("/a/c.txt", "cffi==2.1.1", "pyyaml==6.0.4"), ["a==1"])
    # an empty constraints file still holds the set: not the key of a set without one
    unheld = WheelSet("control", "3.11", CONTROL.platforms)
    assert resolution_key(held("/a/c.txt"), ["a==1"]) != resolution_key(unheld, ["a==1"])


def test_pip_downloads_wheels_only_for_the_sets_python_and_platforms(tmp_path: Path) -> None:
    both = WheelSet("control", "3.11", ("manylinux2014_x86_64", "manylinux_2_28_x86_64"))
    argv = pip_wheels_argv(both, ["ansible-core==2.19.14", "x==1"], tmp_path, "/py", 60, 3)
    assert argv[:4] == ["/py", "-m", "pip", "download"]
    pairs = list(itertools.pairwise(argv))
    for pair in [
        ("--only-binary", ":all:"),
        ("--python-version", "3.11"),
        ("--implementation", "cp"),
        ("--abi", "cp311"),
        ("--platform", "manylinux2014_x86_64"),
        ("--platform", "manylinux_2_28_x86_64"),
        ("--dest", str(tmp_path)),
        ("--retries", "2"),
    ]:
        assert pair in pairs, pair
    assert "--no-deps" not in argv  # the whole closure
    assert argv[-2:] == ["ansible-core==2.19.14", "x==1"]
    assert "-c" not in argv  # no constraints file: none given


def test_pip_holds_the_closure_to_the_sets_constraints_file(tmp_path: Path) -> None:
    held = WheelSet("control", "3.11", CONTROL.platforms, (), False, tmp_path / "c.txt", ())
    argv = pip_wheels_argv(held, ["ansible-core==2.19.14"], tmp_path, "/py", 60, 3)
    assert ("-c", str(tmp_path / "c.txt")) in itertools.pairwise(argv)
    assert argv[-1] == "ansible-core==2.19.14"


# --- the project's own wheel -------------------------------------------------------------------


def test_the_project_is_this_repository_and_its_wheel_sources_are_the_packaged_ones() -> None:
    assert find_project() == REPO and is_project(REPO)
    assert not is_project(REPO / "src")
    files = project_files(REPO)
    assert {"pyproject.toml", "README.md", "plugins/module_utils/llmfleet_bundle.py"} <= set(files)
    assert "src/llmfleet/bundle/wheels.py" in files
    assert not any("__pycache__" in f or f.endswith(".pyc") or ".egg-info" in f for f in files)
    assert {f.split("/")[0] for f in files} <= {p.split("/")[0] for p in PROJECT_FILES}


def make_project(root: Path, dependencies: list[str], body: str = "") -> Path:
    """A tiny llmfleet project (pyproject.toml, README.md, src/llmfleet) in `root`."""
    (root / "src" / "llmfleet").mkdir(parents=True)
    (root / "src" / "llmfleet" / "__init__.py").write_text(f'"""A tiny llmfleet."""\n{body}')
    (root / "README.md").write_text("# llmfleet\n")
    deps = ", ".join(json.dumps(dep) for dep in dependencies)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "llmfleet"\nversion = "0.1.0"\nreadme = "README.md"\n'
        f'dependencies = [{deps}]\n\n[project.optional-dependencies]\ndev = ["pytest==9.2.0"]\n\n'
        '[tool.setuptools.packages.find]\nwhere = ["src"]\n'
    )
    return root


def test_the_project_wheel_is_reproducible_and_kept_by_its_source(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", ["dep-a==1.0"])
    cache = tmp_path / "cache"
    first = build_project_wheel(project, cache)
    data = first.read_bytes()
    assert first.name == "llmfleet-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        assert {info.date_time for info in zipped.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        metadata = zipped.read("llmfleet-0.1.0.dist-info/METADATA").decode()
    assert declared_dependencies(metadata) == ["dep-a==1.0"]
    assert not (project / "build").exists()  # built from a copy: the source is left alone
    assert not list((project / "src").glob("*.egg-info"))

    def must_not_run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        raise AssertionError(f"built again: {argv}")

    assert build_project_wheel(project, cache, run=must_not_run) == first  # unchanged source
    shutil.rmtree(cache)
    again = build_project_wheel(project, cache)  # built afresh: the same bytes
    assert again.read_bytes() == data
    (project / "src" / "llmfleet" / "__init__.py").write_text('"""Changed."""\n')
    changed = build_project_wheel(project, cache)
    assert changed.parent != again.parent and changed.read_bytes() != data
    assert not again.parent.exists()  # the wheel of the earlier source is not kept
    assert [p.name for p in (cache / "project").iterdir()] == [changed.parent.name]


def test_a_project_wheel_that_does_not_build_says_why(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", [])
    (project / "pyproject.toml").write_text("[project\nname = ")
    with pytest.raises(FetchError, match=r"pip wheel of the llmfleet project in .* failed"):
        build_project_wheel(project, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache" / "project").iterdir()] == []


# --- whole builds, pip against a local wheel index ----------------------------------------------


def wheel_requiring(folder: Path, project: str, version: str, requires: list[str]) -> bytes:
    """A valid pure-Python wheel of `project` that depends on `requires`, written to `folder`."""
    package = {f"{project.replace('-', '_')}/__init__.py": b""}
    name, data = wheel(project, version, package, requires=requires)
    (folder / name).write_bytes(data)
    return data


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local index: dep-a needs dep-b; tool 1.0 and 2.0; only-sdist has no wheel at all."""
    folder = tmp_path / "index"
    folder.mkdir()
    wheel_requiring(folder, "dep-a", "1.0", ["dep-b>=1"])
    wheel_requiring(folder, "dep-b", "1.2", [])
    wheel_requiring(folder, "tool", "1.0", ["dep-b"])
    wheel_requiring(folder, "tool", "2.0", [])
    (folder / "only_sdist-1.0.tar.gz").write_bytes(b"not even a tar")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    return folder


class CountingPip:
    """The real pip, with each command line recorded."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        return subprocess.run(argv, capture_output=True, text=True, check=False)


def wheels_spec(requirements: list[str], project: bool = True, **extra: Any) -> dict[str, Any]:
    entry = {"name": "control", "python": "3.11", "platform": "manylinux2014_x86_64"}
    return {
        "name": "test",
        "wheels": [{**entry, "requirements": requirements, "project": project, **extra}],
    }


def build(
    data: dict[str, Any], tmp_path: Path, project: Path | None = None
) -> tuple[BuildResult, CountingPip]:
    pip = CountingPip()
    spec = parse_spec(data, {}, str(tmp_path / "spec.yml"))
    result = build_bundle(
        spec,
        tmp_path / "bundle",
        signing_home=tmp_path / "signing",
        quiet=True,
        fetcher=Fetcher(retries=1, run=pip),
        project=project,
    )
    return result, pip


def lock_lines(bundle: Path) -> list[str]:
    text = (bundle / "wheels/control/requirements.lock").read_text()
    return [line.split(" --hash=")[0] for line in text.splitlines() if not line.startswith("#")]


@needs_gpg
def test_a_set_is_the_closure_with_the_project_wheel_and_a_lock(
    tmp_path: Path, index: Path
) -> None:
    project = make_project(tmp_path / "project", ["dep-a==1.0"])
    result, pip = build(wheels_spec(["tool==2.0"]), tmp_path, project)
    bundle = tmp_path / "bundle"
    [argv] = pip.calls
    assert argv[argv.index("--abi") + 1] == "cp311" and "--only-binary" in argv
    assert argv[-2:] == ["tool==2.0", "dep-a==1.0"]  # the set's pins, then the project's
    # the closure: tool, the project's dep-a and dep-a's dep-b; and the project itself
    assert lock_lines(bundle) == ["dep-a==1.0", "dep-b==1.2", "llmfleet==0.1.0", "tool==2.0"]
    wheels = {a["name"]: a for a in result.manifest["artifacts"] if a["kind"] == "wheel"}
    assert sorted(wheels) == [
        "wheel:control/dep-a",
        "wheel:control/dep-b",
        "wheel:control/llmfleet",
        "wheel:control/tool",
    ]
    tool = wheels["wheel:control/tool"]
    assert tool["path"] == "wheels/control/tool-2.0-py3-none-any.whl"
    assert tool["sha256"] == sha((index / "tool-2.0-py3-none-any.whl").read_bytes())
    assert tool["size"] == (index / "tool-2.0-py3-none-any.whl").stat().st_size
    assert tool["source"] == "pypi: tool==2.0 (wheel, resolved by pip for the set)"
    own = wheels["wheel:control/llmfleet"]
    assert own["source"] == "generated: pip wheel of the llmfleet project"
    # every line of the lock: exact pin and the sha256 of the wheel next to it
    lock = (bundle / "wheels/control/requirements.lock").read_text()
    for artifact in wheels.values():
        name, version = parse_wheel_name(Path(artifact["path"]).name)
        assert f"{name}=={version} --hash=sha256:{artifact['sha256']}\n" in lock
        assert sha((bundle / artifact["path"]).read_bytes()) == artifact["sha256"]
    index_artifact = next(a for a in result.manifest["artifacts"] if a["kind"] == "wheel-index")
    assert index_artifact["name"] == "wheel-index:control"
    assert index_artifact["path"] == "wheels/control/requirements.lock"
    assert index_artifact["sha256"] == sha(lock.encode())
    assert verify_bundle(bundle)[0] == []
    assert "1 wheel set with 4 wheels" in "\n".join(result.summary())

    # pip installs exactly the lock from the bundle, offline, hashes required
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    installed = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")),
            *("install", "--no-index", "--require-hashes", "--disable-pip-version-check"),
            *("-r", str(bundle / "wheels/control/requirements.lock")),
            *("--find-links", str(bundle / "wheels/control")),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PIP_NO_CACHE_DIR": "1"},
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr


@needs_gpg
def test_an_unchanged_set_is_not_downloaded_again(tmp_path: Path, index: Path) -> None:
    project = make_project(tmp_path / "project", ["dep-a==1.0"])
    first, _ = build(wheels_spec(["tool==2.0"]), tmp_path, project)
    lock = (tmp_path / "bundle/wheels/control/requirements.lock").stat().st_mtime_ns
    shutil.rmtree(index)  # nothing left to download from
    second, pip = build(wheels_spec(["tool==2.0"]), tmp_path, project)
    assert pip.calls == [] and second.fetches == 0
    assert not second.changed and second.manifest == first.manifest
    assert (tmp_path / "bundle/wheels/control/requirements.lock").stat().st_mtime_ns == lock
    # a wheel removed from the bundle comes back from the download cache
    (tmp_path / "bundle/wheels/control/dep_b-1.2-py3-none-any.whl").unlink()
    third, pip = build(wheels_spec(["tool==2.0"]), tmp_path, project)
    assert pip.calls == [] and not third.changed
    assert verify_bundle(tmp_path / "bundle")[0] == []


@needs_gpg
def test_a_changed_set_is_resolved_again_and_its_artifacts_follow(
    tmp_path: Path, index: Path
) -> None:
    project = make_project(tmp_path / "project", ["dep-a==1.0"])
    build(wheels_spec(["tool==2.0"]), tmp_path, project)
    older, pip = build(wheels_spec(["tool==1.0"]), tmp_path, project)
    assert len(pip.calls) == 1 and older.changed
    assert lock_lines(tmp_path / "bundle") == [
        "dep-a==1.0",
        "dep-b==1.2",
        "llmfleet==0.1.0",
        "tool==1.0",
    ]
    assert older.removed == ["wheels/control/tool-2.0-py3-none-any.whl"]
    # the project's source changes, its dependencies do not: a new wheel, no download
    (project / "src" / "llmfleet" / "__init__.py").write_text('"""Changed."""\n')
    rebuilt, pip = build(wheels_spec(["tool==1.0"]), tmp_path, project)
    assert pip.calls == [] and rebuilt.changed

    def digest(result: BuildResult, name: str) -> str:
        return next(a["sha256"] for a in result.manifest["artifacts"] if a["name"] == name)

    assert digest(rebuilt, "wheel:control/llmfleet") != digest(older, "wheel:control/llmfleet")
    assert digest(rebuilt, "wheel-index:control") != digest(older, "wheel-index:control")
    # a set without the project: its wheel and the project's dependencies leave the bundle
    alone, _ = build(wheels_spec(["tool==2.0"], project=False), tmp_path, project)
    assert not any(a["name"].endswith("/llmfleet") for a in alone.manifest["artifacts"])
    assert lock_lines(tmp_path / "bundle") == ["tool==2.0"]
    assert verify_bundle(tmp_path / "bundle")[0] == []


@needs_gpg
def test_a_requirement_without_a_wheel_fails_and_leaves_nothing(
    tmp_path: Path, index: Path
) -> None:
    with pytest.raises(FetchError) as caught:
        build(wheels_spec(["tool==2.0", "only-sdist==1.0"], project=False), tmp_path)
    message = str(caught.value)
    assert message.startswith("wheel set control: pip download of 2 requirements for Python 3.11")
    assert "an sdist is refused: a host cannot build it" in message
    assert "only-sdist" in message  # pip's own words name it
    bundle = tmp_path / "bundle"
    assert not (bundle / "wheels").exists() and not (bundle / "manifest.json").exists()
    assert not list((bundle / ".cache" / "downloads").iterdir())
    assert not (bundle / ".cache" / "wheels").exists()


@needs_gpg
def test_a_set_with_the_project_needs_the_projects_source(tmp_path: Path, index: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(BuildError, match=r"wheel set control: project: true needs the llmfleet"):
        build(wheels_spec(["tool==2.0"]), tmp_path, project=tmp_path / "elsewhere")
    assert not (tmp_path / "bundle").exists()


@needs_gpg
def test_a_constraints_file_holds_the_closure_and_a_changed_one_resolves_again(
    tmp_path: Path, index: Path
) -> None:
    wheel_requiring(index, "dep-b", "1.3", [])  # newer than the pinned 1.2: what pip would take
    build(wheels_spec(["dep-a==1.0"], project=False), tmp_path)
    assert lock_lines(tmp_path / "bundle") == ["dep-a==1.0", "dep-b==1.3"]

    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# as CI runs them\ndep-b==1.2\nunused==9.9\n")
    held = wheels_spec(["dep-a==1.0"], project=False, constraints="constraints.txt")
    first, pip = build(held, tmp_path)
    [argv] = pip.calls
    assert ("-c", str(constraints)) in itertools.pairwise(argv)
    # the closure's dep-b is the file's; a pin of a project outside the closure adds nothing
    assert lock_lines(tmp_path / "bundle") == ["dep-a==1.0", "dep-b==1.2"]
    assert first.changed and first.removed == ["wheels/control/dep_b-1.3-py3-none-any.whl"]

    constraints.write_text("# as CI runs them, said otherwise\n\nunused==9.9\nDep_B==1.2\n")
    same, pip = build(held, tmp_path)  # the same pins: the cached resolution
    assert pip.calls == [] and not same.changed

    constraints.write_text("dep-b==1.3\n")
    moved, pip = build(held, tmp_path)  # a changed file: resolved again
    assert len(pip.calls) == 1 and moved.changed
    assert lock_lines(tmp_path / "bundle") == ["dep-a==1.0", "dep-b==1.3"]
    assert verify_bundle(tmp_path / "bundle")[0] == []


@needs_gpg
def test_constraints_that_the_requirements_cannot_meet_fail_naming_the_file(
    tmp_path: Path, index: Path
) -> None:
    (tmp_path / "constraints.txt").write_text("dep-b==1.1\n")  # the index has no dep-b 1.1
    held = wheels_spec(["dep-a==1.0"], project=False, constraints="constraints.txt")
    with pytest.raises(FetchError) as caught:
        build(held, tmp_path)
    message = str(caught.value)
    assert message.startswith(
        "wheel set control: pip download of 1 requirements for Python 3.11 (cp311) on "
        f"manylinux2014_x86_64, held to {tmp_path / 'constraints.txt'}, failed (exit 1)"
    )
    # pip's own words name the conflict
    assert "The user requested (constraint) dep-b==1.1" in message
    assert "dep-a 1.0 depends on dep-b>=1" in message
    assert not (tmp_path / "bundle" / "wheels").exists()


def test_the_shipped_control_set_resolves_to_the_execution_environments_pins(
    tmp_path: Path, index: Path
) -> None:
    """bundles/ci.yml's control set, resolved by pip with what llmfleet's wheel declares,
    against a local index where every project the constraints file pins comes at its pin and
    at a newer version, and ansible-core and ansible-runner need them all: each lands at the
    pin. Where pyproject.toml pins one too (PyYAML, Jinja2), pip resolves only if they agree."""
    spec = load_spec(REPO / "bundles" / "ci.yml", {"LLMFLEET_DEBIAN_MIRROR": "http://m.test/d"})
    control = next(wheelset for wheelset in spec.wheels if wheelset.name == "control")
    assert control.constraints == REPO / "execution-environment" / "requirements.txt"
    pinned = dict(pin.split("==") for pin in control.constraint_pins)
    assert {"jinja2", "pyyaml", "cryptography", "packaging", "resolvelib"} <= set(pinned)
    for name, version in pinned.items():
        wheel_requiring(index, name, version, [])
        wheel_requiring(index, name, "999.0", [])
    for pin in control.requirements:  # each needs every pinned project, at any version
        name, version = pin.split("==")
        wheel_requiring(index, name, version, sorted(pinned))
    # what llmfleet's wheel declares: pyproject.toml's dependencies (the extras come after)
    dependencies = (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]")[0]
    declared = re.findall(r'^    "([A-Za-z0-9._-]+==[^"]+)",$', dependencies, re.M)
    assert {"pyyaml", "jinja2"} <= {canonical_name(pin.split("==")[0]) for pin in declared}
    for pin in declared:
        name, version = pin.split("==")
        if canonical_name(name) not in pinned:
            wheel_requiring(index, canonical_name(name), version, [])
    said: list[str] = []
    resolved = resolve(
        control,
        [*control.requirements, *declared],
        Fetcher(retries=1),
        tmp_path / "cache",
        HashCache(None),
        said.append,
    )
    versions = {wheel.name: wheel.version for wheel, _ in resolved}
    assert {name: versions.get(name) for name in pinned} == pinned
    assert (versions["ansible-core"], versions["ansible-runner"]) == ("2.19.14", "2.4.3")
    assert len(said) == 1  # pip ran, once
