"""The execution environment's definition, its build context, its pins and its bundle spec.

The context under execution-environment/context is what `ansible-builder create` writes from
the definition; the bundle builder builds it like any image. Its Python packages must be the
ones CI runs (the interpreter running these tests, installed from pyproject.toml's pins), and
every one of them must reach the build as a wheel of bundles/ci-ee.yml: the build asks no index.
The molecule/ee scenario builds the image and runs the preflight stage in it.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from helpers import load_module_file

from llmfleet.bundle.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
EE = REPO / "execution-environment"
SPEC = REPO / "bundles" / "ci-ee.yml"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    """name==version lines (comments and blank lines skipped) as {canonical name: version}."""
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        found[canonical(match[1])] = match[2]
    return found


def definition() -> dict:
    return yaml.safe_load((EE / "execution-environment.yml").read_text())


def pyproject_pins() -> dict[str, str]:
    """The exact pins of pyproject.toml (dependencies and the dev extra)."""
    text = (REPO / "pyproject.toml").read_text()
    found = re.findall(r'^\s*"([A-Za-z0-9._-]+)(?:\[[^]]*\])?==([^"]+)"', text, re.M)
    return {canonical(name): version for name, version in found}


def ee_pins() -> dict[str, str]:
    """Every Python package the EE installs: ansible-core, ansible-runner, requirements.txt."""
    deps = definition()["dependencies"]
    return {
        **pins([deps["ansible_core"]["package_pip"], deps["ansible_runner"]["package_pip"]]),
        **pins((EE / deps["python"]).read_text().splitlines()),
    }


def spec():
    return load_spec(SPEC, {**os.environ, "LLMFLEET_DEBIAN_MIRROR": "http://deb.example"})


def tree(folder: Path) -> dict[str, tuple[bytes, bool]]:
    return {
        path.relative_to(folder).as_posix(): (path.read_bytes(), os.access(path, os.X_OK))
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_the_committed_context_is_what_ansible_builder_writes(tmp_path: Path) -> None:
    builder = Path(sys.executable).parent / "ansible-builder"
    if not builder.exists():
        pytest.fail("ansible-builder is not installed: run scripts/dev.sh test (pyproject.toml)")
    command = [
        *(str(builder), "create", "--file", str(EE / "execution-environment.yml")),
        *("--context", str(tmp_path / "context"), "--output-filename", "Dockerfile"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    written, committed = tree(tmp_path / "context"), tree(EE / "context")
    regenerate = (
        "rm -rf execution-environment/context && .venv/bin/ansible-builder create"
        " --file execution-environment/execution-environment.yml"
        " --context execution-environment/context --output-filename Dockerfile"
    )
    differ = sorted(
        name
        for name in written.keys() | committed.keys()
        if written.get(name) != committed.get(name)
    )
    assert not differ, f"execution-environment/context is stale ({', '.join(differ)}): {regenerate}"


def test_ansible_core_and_runner_are_pyprojects_pins() -> None:
    ours, theirs = pyproject_pins(), ee_pins()
    for name in ("ansible-core", "ansible-runner", "jinja2", "pyyaml", "passlib", "promql-parser"):
        assert theirs.get(name) == ours[name], (
            f"{name}: EE {theirs.get(name)}, pyproject {ours[name]}"
        )


def test_every_python_package_of_the_ee_is_the_version_ci_runs() -> None:
    wrong = {
        name: (version, importlib.metadata.version(name))
        for name, version in ee_pins().items()
        if importlib.metadata.version(name) != version
    }
    assert not wrong, f"EE pin differs from CI's installed version (pin, installed): {wrong}"


def test_the_ees_collections_come_from_pyprojects_ansible_release() -> None:
    [ansible] = [f for f in spec().files if f.pypi and f.pypi.name == "ansible"]
    assert ansible.pypi.version == pyproject_pins()["ansible"]
    wheel = Path(ansible.dest).name
    steps = definition()["additional_build_steps"]["prepend_galaxy"]
    assert any(wheel in step for step in steps), f"the galaxy stage does not read {wheel}"


def test_the_bundle_carries_every_wheel_the_build_installs() -> None:
    loaded = spec()
    [image] = loaded.images
    assert image.context == (EE / "context").resolve()
    assert image.tag in definition()["options"]["tags"]
    files = {f.name: f for f in loaded.files}
    assert set(image.files) == set(files), "every file of the spec goes into the EE's context"
    wheels = {
        canonical(f.pypi.name): f for f in files.values() if f.pypi and f.pypi.name != "ansible"
    }
    assert all(f.pypi.kind == "wheel" for f in wheels.values())
    # the EE's packages, and bindep with what it needs (ansible-builder's build stage)
    for name, version in ee_pins().items():
        assert name in wheels, f"{name}=={version} has no wheel in {SPEC.name}"
        assert wheels[name].pypi.version == version, (
            f"{name}: {SPEC.name} has {wheels[name].pypi.version}"
        )
    assert {"bindep", "distro", "parsley", "pbr"} <= wheels.keys()
    # the base stage copies them with its globs, and not the 54 MB ansible wheel
    [copy] = [
        s
        for s in definition()["additional_build_steps"]["prepend_base"]
        if s.endswith("/output/llmfleet-wheels/")
    ]
    globs = [glob.replace("[^", "[!") for glob in shlex.split(copy)[1:-1]]
    for name, entry in files.items():
        copied = any(fnmatch.fnmatchcase(Path(entry.dest).name, glob) for glob in globs)
        assert copied == (name in {f.name for f in wheels.values()}), (
            f"{entry.dest}: copied {copied}"
        )


def collections_from_wheel() -> ModuleType:
    return load_module_file("cfw", EE / "files" / "collections_from_wheel.py")


def test_collections_from_wheel_unpacks_only_the_named_collections(tmp_path: Path) -> None:
    wheel = tmp_path / "ansible-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for collection in ("community/docker", "community/general"):
            archive.writestr(f"ansible_collections/{collection}/MANIFEST.json", "{}")
            archive.writestr(f"ansible_collections/{collection}/plugins/x.py", "")
        archive.writestr("ansible-1.0.0.dist-info/METADATA", "")
    module = collections_from_wheel()
    assert module.main([str(wheel), str(tmp_path / "out"), "community.docker"]) == 0
    unpacked = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*")
    )
    assert unpacked == [
        "ansible_collections/community/docker/MANIFEST.json",
        "ansible_collections/community/docker/plugins/x.py",
    ]
    with pytest.raises(SystemExit, match=r"not in the wheel: community\.crypto"):
        module.main([str(wheel), str(tmp_path / "out2"), "community.crypto"])


def run_apt_wrapper(tmp_path: Path, *args: str) -> list[str]:
    """Runs files/llmfleet-apt with apt-get and rm replaced by recorders; returns their calls."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("apt-get", "rm"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >>{calls}\n')
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run([str(EE / "files" / "llmfleet-apt"), *args], env=env, check=False)
    assert result.returncode == 0
    return calls.read_text().splitlines() if calls.exists() else []


def test_the_apt_wrapper_takes_dnf_style_calls(tmp_path: Path) -> None:
    # the base stage: "$PKGMGR install $PYPKG -y"; install-from-bindep: "$PKGMGR install -y ..."
    assert run_apt_wrapper(tmp_path, "install", "python3-pip", "-y") == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends python3-pip",
    ]
    (tmp_path / "calls").unlink()
    assert run_apt_wrapper(tmp_path, "install", "-y", "openssh-client", "dumb-init")[-1] == (
        "apt-get install -y -qq --no-install-recommends openssh-client dumb-init"
    )
    (tmp_path / "calls").unlink()
    assert run_apt_wrapper(tmp_path, "install", "-y") == []
    clean = run_apt_wrapper(tmp_path, "clean", "all")
    assert clean[0] == "apt-get clean"
    assert clean[1].startswith("rm -rf /var/lib/apt/lists/")
