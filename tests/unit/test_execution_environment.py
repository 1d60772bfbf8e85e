"""The execution environment's definition, its build context, its pins and its bundle spec.

The bundle builder has `ansible-builder create` write the build context from the definition at
build time (nothing generated is committed), then builds it like any image. Its Python packages
must be the
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
import shutil
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from helpers import load_module_file

from llmfleet.bundle.images import inputs_digest, write_context
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


def test_the_ee_image_is_built_from_the_definition_not_a_committed_context() -> None:
    [image] = spec().images
    assert image.execution_environment == (EE / "execution-environment.yml").resolve()
    assert image.context is None
    assert not (EE / "context").exists(), "the context is written at build time, not committed"


def test_ansible_builder_writes_the_context_the_build_reads(tmp_path: Path) -> None:
    [image] = spec().images
    context = tmp_path / "context-ee"
    write_context(image, context)
    dockerfile = (context / "Dockerfile").read_text()
    assert 'EE_BASE_IMAGE="llmfleet/debian12-systemd:latest"' in dockerfile
    # the definition's additional build files, each where the Dockerfile copies it from
    copied = re.findall(r"^COPY (_build/\S+) ", dockerfile, re.M)
    assert "_build/llmfleet/collections_from_wheel.py" in copied
    for source in copied:
        assert (context / source).exists(), f"the Dockerfile copies {source}, not in the context"
    assert (context / "_build/llmfleet/collections_from_wheel.py").read_bytes() == (
        EE / "files" / "collections_from_wheel.py"
    ).read_bytes()
    requirements = (context / "_build/requirements.txt").read_text()
    assert requirements == (EE / "requirements.txt").read_text()


def test_the_digest_follows_what_ansible_builder_writes(tmp_path: Path) -> None:
    """A change to an input of the definition rebuilds the image; anything else does not."""
    folder = tmp_path / "execution-environment"
    shutil.copytree(EE, folder)
    [image] = spec().images
    image = replace(image, execution_environment=folder / "execution-environment.yml")
    wheels = {name: "a" * 64 for name in image.files}

    def digest() -> str:
        write_context(image, tmp_path / "context")
        return inputs_digest(image, wheels, tmp_path / "context")

    first = digest()
    assert digest() == first, "an unchanged definition must not rebuild the image"
    (folder / "README.md").write_text("notes\n")
    assert digest() == first, "a file ansible-builder does not read must not rebuild the image"
    definition = folder / "execution-environment.yml"
    original = definition.read_text()
    definition.write_text(original + "# a comment: the same context\n")
    assert digest() == first, "a comment in the definition must not rebuild the image"
    definition.write_text(original)
    changes = {
        "execution-environment.yml": ("ENV LANG=C.UTF-8", "ENV LANG=C"),
        "requirements.txt": ("passlib==", "passlib>="),
        "bindep.txt": ("", "# another system package\n"),
        "files/collections_from_wheel.py": ("", "# changed\n"),
    }
    for name, (old, new) in changes.items():
        original = (folder / name).read_text()
        assert old in original
        (folder / name).write_text(original.replace(old, new, 1) if old else original + new)
        assert digest() != first, f"a change to {name} must rebuild the image"
        (folder / name).write_text(original)
        assert digest() == first


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
    assert image.execution_environment == (EE / "execution-environment.yml").resolve()
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
