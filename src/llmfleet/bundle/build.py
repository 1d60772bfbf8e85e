"""`llmfleet bundle build SPEC --output DIR`: gather, check, index and sign a bundle.

Layout of DIR (a contract with the roles that serve and install it)::

    manifest.json, manifest.json.asc, SHA256SUMS
    keys/llmfleet-bundle.gpg, keys/llmfleet-bundle.asc     the bundle's PUBLIC key
    apt/<repo>/                                            flat signed apt repo per spec entry
    files/..., models/..., images/...                      files at the spec's dest
    images/<name>.tar                                      `docker save` archives of spec images
    wheels/<set>/*.whl, wheels/<set>/requirements.lock     pinned wheels per spec wheel set
    .cache/                                                the build cache (not part of the bundle)

Incremental: downloads are cached by sha256 (`<cache>/downloads`), apt's archives and lists
per repo (`<cache>/apt/<repo>`), fetched keys (`<cache>/keys`), wheel sets' resolutions
(`<cache>/wheels`) and the project's wheel (`<cache>/project`); a file already at its dest with
the right checksum is not touched. When nothing changed, manifest.json, its signature and
SHA256SUMS are not rewritten. Files no longer in the spec are removed from DIR.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmfleet_bundle import KEY_ARMORED, KEYRING, MANIFEST, SIGNATURE, SUMS, artifacts_by_path

from llmfleet.bundle import apt_repo
from llmfleet.bundle.fetch import (
    Fetcher,
    FetchError,
    HashCache,
    cached_download,
    extract_member,
    place,
)
from llmfleet.bundle.images import ensure_image
from llmfleet.bundle.manifest import (
    CACHE_DIR,
    NOT_ARTIFACTS,
    AptSection,
    Artifact,
    make_manifest,
    read_manifest,
    render_manifest,
    render_sums,
    same_content,
    utc_now,
)
from llmfleet.bundle.signing import Signer, gpgv_check
from llmfleet.bundle.spec import AptRepo, FileEntry, Spec
from llmfleet.bundle.wheels import WheelContext, ensure_wheel_set, find_project, is_project
from llmfleet.fileio import write_atomic

#: Top-level folders the builder owns: anything in them that is not an artifact is removed.
OWNED = ("apt", "files", "models", "images", "keys", "wheels")


class BuildError(Exception):
    """The build cannot go on; the message says why and what to do."""


@dataclass
class BuildResult:
    output: Path
    manifest: dict[str, Any]
    changed: bool
    fingerprint: str
    key_generated: bool
    signing_home: Path
    fetches: int
    removed: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        artifacts = self.manifest["artifacts"]
        debs = [a for a in artifacts if a["kind"] == "deb"]
        files = [a for a in artifacts if a["kind"] == "file"]
        wheels = [a for a in artifacts if a["kind"] == "wheel"]
        sets = [a for a in artifacts if a["kind"] == "wheel-index"]
        total = sum(a["size"] for a in artifacts)
        state = "changed" if self.changed else "unchanged"
        lines = [
            f"bundle {self.manifest['name']} in {self.output}: {state} "
            f"(created {self.manifest['created']})",
            f"  {len(files)} files, {len(self.manifest['apt'])} apt repos with {len(debs)} debs "
            f"({sum(a['size'] for a in debs) / 1e6:.1f} MB), {len(artifacts)} artifacts, "
            f"{total / 1e6:.1f} MB",
        ]
        if sets:
            lines.append(
                f"  {len(sets)} wheel set{'s' if len(sets) != 1 else ''} with {len(wheels)} wheels "
                f"({sum(a['size'] for a in wheels) / 1e6:.1f} MB)"
            )
        lines += [
            f"  signing key {self.fingerprint} ({'generated' if self.key_generated else 'reused'}"
            f", private part in {self.signing_home})",
            f"  keys/llmfleet-bundle.gpg sha256 {self.manifest['signing_key']['sha256']}",
            f"  downloads this build: {self.fetches}",
        ]
        lines += [f"  removed (no longer in the spec): {path}" for path in self.removed]
        lines += [f"  warning: not part of the bundle, remove it: {path}" for path in self.strays]
        return lines


@dataclass
class _Context(WheelContext):
    """What the build's steps share: a wheel set's (folders, fetcher, hash cache, the
    project's source) and the apt log."""

    apt_log: Callable[[str], None] | None


def check_output(output: Path) -> None:
    """Refuse a DIR that exists, is not empty and is not a bundle (it would be pruned)."""
    if output.exists() and not output.is_dir():
        raise BuildError(f"{output} exists and is not a folder")
    is_bundle = (output / MANIFEST).exists() or (output / CACHE_DIR).exists()
    if output.is_dir() and any(output.iterdir()) and not is_bundle:
        raise BuildError(
            f"{output} is not empty and holds no bundle (no {MANIFEST}, no {CACHE_DIR}/): "
            "give an empty or new folder"
        )
    if output.is_dir():
        links = symbolic_links(output)
        if links:
            shown = ", ".join(f"{link} -> {os.readlink(link)}" for link in links[:5])
            raise BuildError(
                f"{output} holds symbolic links where the builder writes: {shown}; the "
                "builder writes only inside the bundle folder and never through a link: "
                "replace each with a real folder or file (a cache elsewhere: --cache DIR)"
            )


def symbolic_links(output: Path) -> list[Path]:
    """Symbolic links in the folders the builder writes (its own and the cache), sorted."""
    links = []
    for top in (*OWNED, CACHE_DIR, MANIFEST, SIGNATURE, SUMS):
        path = output / top
        if path.is_symlink():
            links.append(path)
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                links += [Path(root) / name for name in [*dirs, *files]
                          if (Path(root) / name).is_symlink()]  # fmt: skip
    return sorted(links)


def check_places(output: Path, signing_home: Path, cache: Path) -> None:
    """The private key never under the bundle; a cache under it only in DIR/.cache."""
    out, home, cached = output.resolve(), signing_home.resolve(), cache.resolve()
    if home == out or out in home.parents or home in out.parents:
        raise BuildError(
            f"the signing home {signing_home} must be outside the bundle {output}: "
            "its private key must never be carried with the bundle"
        )
    inside = cached == out or out in cached.parents
    if inside and not (cached == out / CACHE_DIR or out / CACHE_DIR in cached.parents):
        raise BuildError(f"the cache {cache} is inside the bundle: use {output / CACHE_DIR}")


def _reason(exc: OSError) -> str:
    """An OSError in words: the reason and, when it is another path, that path."""
    reason = exc.strerror or str(exc)
    return f"{reason} ({exc.filename})" if exc.filename else reason


def require_tools(spec: Spec) -> None:
    needed = {"gpg": "gnupg", "gpgv": "gpgv", "gpgconf": "gnupg"}
    if spec.apt:
        needed |= {"docker": "docker.io", "apt-ftparchive": "apt-utils"}
    if spec.images:
        needed |= {"docker": "docker.io"}
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in needed.items() if not _which(tool)]
    if missing:
        raise BuildError(f"missing on this machine: {', '.join(missing)}")


def _which(tool: str) -> bool:
    return shutil.which(tool) is not None


def project_for(spec: Spec, project: Path | None) -> Path | None:
    """The llmfleet source a wheel set with `project: true` builds from: `project`, else the
    checkout this llmfleet runs from; BuildError when a set needs it and there is none."""
    needing = [wheelset.name for wheelset in spec.wheels if wheelset.project]
    if not needing:
        return None
    found = project if project is not None else find_project()
    if found is None or not is_project(found):
        where = found or Path(__file__).resolve().parent
        raise BuildError(
            f"wheel set {needing[0]}: project: true needs the llmfleet project's source "
            f"(its pyproject.toml), and {where} is not in one: run the build with the "
            "llmfleet of the repository checkout (.venv/bin/llmfleet after pip install -e .)"
        )
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildError(f"another build holds {path}: wait for it to finish") from None
        yield


def build_bundle(
    spec: Spec,
    output: Path,
    signing_home: Path,
    cache: Path | None = None,
    quiet: bool = False,
    fetcher: Fetcher | None = None,
    project: Path | None = None,
) -> BuildResult:
    """Build or update the bundle for `spec` in `output`; see the module docstring.

    `project` is the llmfleet source a wheel set with `project: true` builds its wheel from
    (default: the checkout this code runs from).
    """
    output = output.absolute()
    cache = (cache or output / CACHE_DIR).absolute()
    check_output(output)
    check_places(output, signing_home, cache)
    require_tools(spec)
    project = project_for(spec, project)
    try:
        output.mkdir(parents=True, exist_ok=True)
        (output / CACHE_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot write the bundle folder {output}: {_reason(exc)}") from None
    staging = output / CACHE_DIR / "tmp"

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    with _locked(output / CACHE_DIR / "lock"):
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        ctx = _Context(
            output=output,
            cache=cache,
            staging=staging,
            fetcher=fetcher or Fetcher(),
            hashes=HashCache(cache / "hashes.json"),
            say=say,
            apt_log=None if quiet else apt_repo.log_to_stderr("  | "),
            project=project,
        )
        signer = Signer(signing_home)
        try:
            return _build(spec, ctx, signer)
        finally:
            ctx.hashes.save()
            signer.close()
            shutil.rmtree(staging, ignore_errors=True)


def _build(spec: Spec, ctx: _Context, signer: Signer) -> BuildResult:
    fingerprint, generated = signer.ensure_key()
    ctx.say(f"signing key {fingerprint} ({'generated' if generated else 'reused'})")
    artifacts = publish_keys(signer, ctx)
    previous = read_manifest(ctx.output)
    known = artifacts_by_path(previous)
    for entry in spec.files:
        artifacts.append(ensure_file(entry, ctx, known.get(entry.dest)))
    files = {artifact.name: artifact for artifact in artifacts if artifact.kind == "file"}
    for image in spec.images:
        artifacts.append(
            ensure_image(
                image,
                ctx.output,
                ctx.staging,
                files,
                known.get(image.dest),
                ctx.say,
                ctx.hashes.sha256,
            )
        )
    for wheelset in spec.wheels:
        artifacts += ensure_wheel_set(wheelset, ctx)
    sections = []
    for repo in spec.apt:
        section, repo_artifacts = build_repo(repo, spec.name, ctx, signer)
        sections.append(section)
        artifacts += repo_artifacts
    keep = {artifact.path for artifact in artifacts}
    removed = prune(ctx.output, keep)
    strays = [
        entry.name
        for entry in sorted(ctx.output.iterdir())
        if entry.name not in (*OWNED, *NOT_ARTIFACTS, CACHE_DIR)
    ]
    key_sha = next(a.sha256 for a in artifacts if a.path == KEYRING)
    manifest = make_manifest(spec.name, fingerprint, key_sha, sections, artifacts, utc_now())
    changed = not same_content(previous, manifest)
    if not changed:
        assert previous is not None
        manifest["created"] = previous["created"]
    write_manifest(manifest, ctx.output, signer)
    return BuildResult(
        output=ctx.output,
        manifest=manifest,
        changed=changed,
        fingerprint=fingerprint,
        key_generated=generated,
        signing_home=signer.home,
        fetches=ctx.fetcher.fetches,
        removed=removed,
        strays=strays,
    )


def publish_keys(signer: Signer, ctx: _Context) -> list[Artifact]:
    """keys/llmfleet-bundle.gpg (binary, for apt's Signed-By) and .asc; rewritten on change."""
    artifacts = []
    for path, armor, name in ((KEYRING, False, "key"), (KEY_ARMORED, True, "key:asc")):
        data = signer.export_public(armor)
        target = ctx.output / path
        if not target.is_file() or target.read_bytes() != data:
            write_atomic(target, data)
        artifacts.append(
            Artifact(
                name=name,
                kind="key",
                path=path,
                sha256=ctx.hashes.sha256(target),
                size=len(data),
                source=f"generated: public part of the bundle key {signer.fingerprint}",
            )
        )
    return artifacts


def ensure_file(entry: FileEntry, ctx: _Context, known: dict[str, Any] | None) -> Artifact:
    """The spec's file at its dest, fetched (or extracted) only when it is missing or stale."""
    dest = ctx.output / entry.dest
    if entry.extract is None:
        want: str | None = entry.sha256
    elif (
        known
        and known.get("member") == entry.extract
        and known.get("archive_sha256") == entry.sha256
    ):
        want = known.get("sha256")
    else:
        want = None
    artifact = Artifact.unchecked(
        entry.name,
        "file",
        entry.dest,
        entry.source,
        member=entry.extract,
        archive_sha256=entry.sha256 if entry.extract else None,
    )
    if want and dest.is_file() and ctx.hashes.sha256(dest) == want:
        return artifact.with_checksum(want, dest.stat().st_size)
    ctx.say(f"fetching {entry.name} from {entry.source}")
    archive = cached_download(
        ctx.fetcher,
        entry.origin,
        entry.sha256,
        ctx.cache / "downloads",
        ctx.staging,
        entry.name,
        ctx.hashes,
    )
    if entry.extract is None:
        place(archive, dest, ctx.staging)
        return artifact.with_checksum(entry.sha256, dest.stat().st_size)
    try:
        temp, sha256, size = extract_member(archive, entry.extract, ctx.staging)
    except FetchError as exc:
        raise FetchError(f"{entry.name}: extract from {entry.source}: {exc}") from exc
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)
    return artifact.with_checksum(sha256, size)


def build_repo(
    repo: AptRepo, spec_name: str, ctx: _Context, signer: Signer
) -> tuple[AptSection, list[Artifact]]:
    """Resolve `repo` in its container, publish the debs, write and sign the index."""
    where = f"apt repo {repo.name}"
    ctx.say(f"{where}: resolving {' '.join(repo.packages)} in a container of {repo.image}")
    debs = apt_repo.resolve(repo, ctx.cache, ctx.staging, ctx.fetcher, ctx.apt_log)
    section = AptSection(repo, tuple(debs))
    repo_dir = ctx.output / section.path
    archives = ctx.cache / "apt" / repo.name / "archives"
    apt_repo.publish_debs(debs, archives, repo_dir, ctx.staging, ctx.hashes, where)
    written = apt_repo.write_index(
        repo,
        repo_dir,
        signer,
        ctx.output / KEYRING,
        ctx.cache / "apt" / repo.name / "ftparchive.db",
        ctx.staging,
        spec_name,
    )
    ctx.say(
        f"{where}: {len(debs)} debs, {sum(d.size for d in debs) / 1e6:.1f} MB; "
        f"index {'written and signed' if written else 'unchanged'}"
    )
    artifacts = [
        Artifact(
            name=f"deb:{repo.name}/{deb.package}",
            kind="deb",
            path=section.deb_path(deb),
            sha256=deb.sha256,
            size=(repo_dir / deb.pool_name).stat().st_size,
            source=apt_repo.raw_url(deb.url, repo.sources),
        )
        for deb in debs
    ]
    for name in apt_repo.INDEX_FILES:
        path = repo_dir / name
        artifacts.append(
            Artifact(
                name=f"apt-index:{repo.name}/{name}",
                kind="apt-index",
                path=f"{section.path}/{name}",
                sha256=ctx.hashes.sha256(path),
                size=path.stat().st_size,
                source="generated: apt-ftparchive"
                if name.startswith("Packages") or name == "Release"
                else "generated: signed by the bundle key",
            )
        )
    return section, artifacts


def prune(output: Path, keep: set[str]) -> list[str]:
    """Remove files in the builder's folders that are not artifacts any more."""
    removed = []
    for top in OWNED:
        folder = output / top
        if not folder.is_dir():
            continue
        for root, dirs, files in os.walk(folder, topdown=False):
            for name in [*files, *(d for d in dirs if (Path(root) / d).is_symlink())]:
                path = Path(root) / name
                relative = path.relative_to(output).as_posix()
                if relative not in keep:
                    path.unlink()
                    removed.append(relative)
            with contextlib.suppress(OSError):
                if root != str(output) and not any(Path(root).iterdir()):
                    Path(root).rmdir()
    return sorted(removed)


def write_manifest(manifest: dict[str, Any], output: Path, signer: Signer) -> None:
    """manifest.json, manifest.json.asc and SHA256SUMS; each written only when it differs."""
    data = render_manifest(manifest)
    path = output / MANIFEST
    rewritten = not path.is_file() or path.read_bytes() != data
    if rewritten:
        write_atomic(path, data)
    signature = output / SIGNATURE
    keyring = output / KEYRING
    if rewritten or not gpgv_check(keyring, signature, path).ok:
        signer.sign_detached(path, signature)
    sums = render_sums(manifest)
    if not (output / SUMS).is_file() or (output / SUMS).read_bytes() != sums:
        write_atomic(output / SUMS, sums)
