"""Helpers the unit and integration tests share (tests/ is on pytest's pythonpath).

Only loopback and temporary folders: a file server on 127.0.0.1, the Prometheus text a
receiver answers, the apt entry of a Debian 12 bundle spec, a wheel for a local index,
a fake sysfs tree.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import io
import threading
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

#: Proxy variables a test server on loopback must not go through.
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy")


def monitoring_role_vars() -> dict[str, Any]:
    """roles/monitoring/vars/main.yml as Ansible reads it (its DataLoader): the alert catalog
    (monitoring_alert_catalog) and the recording rules (monitoring_recording_rules)."""
    from ansible.parsing.dataloader import DataLoader

    path = Path(__file__).resolve().parents[1] / "roles" / "monitoring" / "vars" / "main.yml"
    return DataLoader().load_from_file(str(path))


def trusted(value: Any) -> Any:
    """Role data as Ansible holds it: its strings are templates."""
    from ansible.template import trust_as_template

    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: trusted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [trusted(item) for item in value]
    return value


def role_templar(variables: dict[str, Any]) -> Any:
    """Ansible's Templar over `variables` held as role data (`trusted`), as a role renders."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    return Templar(loader=DataLoader(), variables=trusted(variables))


def load_module_file(name: str, path: Path) -> ModuleType:
    """The Python file `path` (a filter plugin, a script: nothing on sys.path), executed as a
    fresh module called `name`; not registered in sys.modules."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing to stderr (the test output stays readable)."""

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_on_loopback(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` behind a ThreadingHTTPServer on an ephemeral port of 127.0.0.1; yields the
    base URL (http://127.0.0.1:PORT); the server shuts down and closes when the block ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class FileServer:
    """What an http.server on 127.0.0.1 serves (`files`, by path), the requests it saw
    (`hits`), the error statuses a path answers first, one per request (`errors`), and how
    many times each path is cut short after half its body (`truncate`)."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    errors: dict[str, list[int]] = field(default_factory=dict)
    truncate: dict[str, int] = field(default_factory=dict)
    url: str = ""


@contextlib.contextmanager
def serve_files(served: FileServer | None = None) -> Iterator[FileServer]:
    """Serve `served.files` on an ephemeral port of 127.0.0.1 until the block ends."""
    served = served or FileServer()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            served.hits.append(self.path)
            data = served.files.get(self.path)
            if served.errors.get(self.path):
                self.send_error(served.errors[self.path].pop(0))
                return
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

    with http_on_loopback(Handler) as served.url:
        yield served


@contextlib.contextmanager
def receiver_on_loopback(receiver: Any, stop_timeout: float = 5) -> Iterator[int]:
    """A `llmfleet.rollback_receiver.Receiver`'s HTTP interface on an ephemeral port of
    127.0.0.1 (the port is yielded); the server and then the receiver stop at the end."""
    from llmfleet import rollback_receiver

    server = rollback_receiver.make_server(receiver, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        receiver.stop(stop_timeout)


def loopback_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, bytes, http.client.HTTPResponse]:
    """One request to 127.0.0.1:`port` on a connection of its own: the status, the whole
    body and the response (for its headers); the connection closes."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response
    finally:
        connection.close()


class ServedReceiver:
    """A receiver served by `receiver_on_loopback` and requests to it, each on a connection
    of its own (`loopback_request`) with the `timeout` of the test."""

    timeout: float = 10

    def __init__(self, receiver: Any, port: int) -> None:
        self.receiver = receiver
        self.port = port

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        return loopback_request(self.port, method, path, body, headers, self.timeout)


def prometheus_samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample line of a Prometheus text exposition."""
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def debian_apt_entry(image: str, packages: list[str], **settings: Any) -> dict[str, Any]:
    """A spec's apt entry `debian12`: bookworm main from ${LLMFLEET_DEBIAN_MIRROR}, signed
    by the image's Debian archive keyring; `settings` adds or replaces keys."""
    return {
        "name": "debian12",
        "image": image,
        **settings,
        "sources": [
            {
                "uris": "${LLMFLEET_DEBIAN_MIRROR}",
                "suites": ["bookworm"],
                "components": ["main"],
                "signed_by": {"path": "/usr/share/keyrings/debian-archive-keyring.gpg"},
            }
        ],
        "packages": packages,
    }


def wheel(
    project: str, version: str, files: dict[str, bytes], requires: Sequence[str] = ()
) -> tuple[str, bytes]:
    """(file name, bytes) of a small, valid pure-Python wheel of `project` `version` holding
    `files` and depending on `requires` (Requires-Dist): what `pip download` accepts from a
    local index. The same input, the same bytes."""
    stem = f"{project.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {dep}\n" for dep in requires)
    content = {
        **files,
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    content[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in content).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in content.items():
            zipped.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return f"{stem}-py3-none-any.whl", buffer.getvalue()


def write_wheel(folder: Path, project: str, version: str, files: dict[str, bytes]) -> Path:
    """`wheel(...)` written into `folder` (a local index for PIP_FIND_LINKS)."""
    name, data = wheel(project, version, files)
    (folder / name).write_bytes(data)
    return folder / name


def write_sysfs(
    root: Path,
    devices: Mapping[str, Mapping[str, str]],
    numa_nodes: int | None = 2,
    nvidia_module_version: str | None = None,
) -> Path:
    """Write a fake sysfs tree under ``root``: the PCI `devices` (address: file: content),
    `numa_nodes` NUMA nodes, the nvidia module's version; return ``root``."""
    pci_dir = root / "bus" / "pci" / "devices"
    pci_dir.mkdir(parents=True)
    for address, files in devices.items():
        device_dir = pci_dir / address
        device_dir.mkdir()
        for name, content in files.items():
            (device_dir / name).write_text(content + "\n")
    if numa_nodes is not None:
        node_dir = root / "devices" / "system" / "node"
        node_dir.mkdir(parents=True)
        (node_dir / "possible").write_text(f"0-{max(numa_nodes - 1, 0)}\n")
        (node_dir / "power").mkdir()
        for number in range(numa_nodes):
            (node_dir / f"node{number}").mkdir()
    if nvidia_module_version is not None:
        module_dir = root / "module" / "nvidia"
        module_dir.mkdir(parents=True)
        (module_dir / "version").write_text(nvidia_module_version + "\n")
    return root
