"""Debian's headless Chromium, driven over the Chrome DevTools Protocol on a pipe.

The driver is Chromium's own protocol (CDP) spoken over ``--remote-debugging-pipe``
(JSON messages, each ended by a NUL byte, on file descriptors 3 and 4), with the
standard library alone. Why: the browser the distribution ships is used as it is, with
no browser download (Playwright's install step) and no second binary whose version must
match it (chromedriver for Selenium); and a pipe needs no TCP port, so Chromium can run
in a network namespace of its own, with no route anywhere (``unshare --net``): nothing it
or the page tries can reach any address. CDP gives what the test asserts on: every
request the page makes (``Network.requestWillBeSent``, ``Network.webSocketCreated``),
console errors and exceptions, and a full-page PNG.

Chromium's own log of its network stack (``--log-net-log``) is read too. Chromium itself
calls home in the background (time, update and account services, whatever the flags say;
Debian's launcher sets Google API keys): those requests carry no initiator, and the
namespace stops them. A request from the page would carry the page's origin.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("LLMFLEET_CHROMIUM", "/usr/bin/chromium"))
#: The flags the brief names, and a window large enough for the page's tables.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--window-size=1280,1000",
    "--remote-debugging-pipe",
)
#: Schemes that stay on this machine.
LOCAL_SCHEMES = ("data:", "file:", "about:")
#: The initiator Chromium's net log gives its own background requests.
BROWSER_INITIATOR = "not an origin"
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 60.0
_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


class ChromiumError(RuntimeError):
    """The browser did not start or did not answer; the message says where."""


def isolation() -> list[str]:
    """The command that runs Chromium in a network namespace of its own (only a loopback,
    down), or nothing where this machine allows none (the test says which it got)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    for command in ([unshare, "--net"], [unshare, "--map-root-user", "--net"]):
        probe = subprocess.run([*command, "true"], capture_output=True, check=False, timeout=30)
        if probe.returncode == 0:
            return command
    return []


@dataclass
class Session:
    """The browser's DevTools pipe: commands to a page, and every event seen so far."""

    to_browser: int
    from_browser: int
    session_id: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 0
    _buffer: bytes = b""

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self.to_browser, data) :]

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None when none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                return None
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise ChromiumError("the browser closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, *, browser: bool = False, **params: Any) -> dict[str, Any]:
        """Send a command (to the page, or to the browser) and wait for its answer; events
        met on the way are kept."""
        self.next_id += 1
        number = self.next_id
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if self.session_id and not browser:
            message["sessionId"] = self.session_id
        self._send(message)
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            answer = self._receive(left)
            if answer is None:
                break
            if answer.get("id") == number:
                if "error" in answer:
                    raise ChromiumError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            if "method" in answer:
                self.events.append(answer)
        raise ChromiumError(f"{method}: no answer in {COMMAND_TIMEOUT_S:.0f} s")

    def wait_for(self, method: str, timeout: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        """The first event `method` (already seen, or the next to come)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = next((event for event in self.events if event["method"] == method), None)
            if seen is not None:
                return seen
            left = deadline - time.monotonic()
            message = self._receive(left) if left > 0 else None
            if message is None:
                raise ChromiumError(f"no {method} event in {timeout:.0f} s")
            if "method" in message:
                self.events.append(message)

    def drain(self, seconds: float) -> None:
        """Keep the events that arrive within `seconds` (requests a page makes late)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self._receive(left)
            if message is None:
                break
            if "method" in message:
                self.events.append(message)

    def open_page(self) -> None:
        """A new page target, attached (flat protocol), with the domains the test reads."""
        target = self.call("Target.createTarget", browser=True, url="about:blank")
        attached = self.call(
            "Target.attachToTarget", browser=True, targetId=target["targetId"], flatten=True
        )
        self.session_id = attached["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Network.setCacheDisabled", cacheDisabled=True)

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise ChromiumError(f"the page's script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def _page_events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for event in self.events:
            if self.session_id is None or event.get("sessionId") == self.session_id:
                yield event["method"], event.get("params", {})

    def requests(self) -> list[str]:
        """Every URL the page asked for: documents, subresources, fetches, sockets."""
        urls = []
        for method, params in self._page_events():
            if method == "Network.requestWillBeSent":
                urls.append(params["request"]["url"])
            elif method == "Network.webSocketCreated":
                urls.append(params["url"])
        return urls

    def problems(self) -> list[str]:
        """Console errors (a refused request is one: CSP says "Refused to ..."), uncaught
        exceptions and failed loads."""
        found = []
        for method, params in self._page_events():
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"console: {params['entry'].get('text')}")
            elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(f"console.error: {params.get('args')}")
            elif method == "Network.loadingFailed":
                found.append(
                    f"load failed: {params.get('errorText')} {params.get('blockedReason') or ''}"
                )
        return found

    def screenshot(self, path: Path, width: int = 1280, max_height: int = 16000) -> Path:
        """The whole page as a PNG at `path`."""
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = min(int(size["height"]) + 1, max_height)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


def _high_fd(fd: int) -> int:
    """`fd` moved to a number above 4 (close-on-exec), so the dup2 onto 3 and 4 is real."""
    import fcntl

    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


@contextlib.contextmanager
def chromium(workdir: Path, wrapper: list[str] | None = None) -> Iterator[tuple[Session, Path]]:
    """A fresh headless Chromium (its own profile under `workdir`), started under
    `wrapper` (e.g. `isolation()`), a session attached to a new page, and the path its net
    log is written to (complete once the block ends)."""
    profile = workdir / "profile"
    netlog = workdir / "netlog.json"
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir(parents=True)
    commands_read, commands_write = (_high_fd(fd) for fd in os.pipe())
    answers_read, answers_write = (_high_fd(fd) for fd in os.pipe())
    argv = [
        *(wrapper or []),
        str(CHROMIUM),
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--log-net-log={netlog}",
        "about:blank",
    ]
    log = workdir / "chromium.log"
    pid = os.posix_spawn(
        argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0]) or argv[0],
        argv,
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
            (os.POSIX_SPAWN_DUP2, commands_read, 3),
            (os.POSIX_SPAWN_DUP2, answers_write, 4),
        ],
        setsid=True,
    )
    os.close(commands_read)
    os.close(answers_write)
    session = Session(commands_write, answers_read)
    try:
        try:
            session.call("Browser.getVersion", browser=True)
        except ChromiumError as exc:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ChromiumError(f"{CHROMIUM} did not answer on its pipe: {exc}\n{tail}") from None
        session.open_page()
        yield session, netlog
    finally:
        with contextlib.suppress(ChromiumError, OSError):
            session.call("Browser.close", browser=True)
        _reap(pid)
        for fd in (commands_write, answers_read):
            with contextlib.suppress(OSError):
                os.close(fd)


def _reap(pid: int, timeout: float = 20.0) -> None:
    """Wait for Chromium (and its process group) to end; TERM, then KILL, if it does not."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.1)


def read_net_log(path: Path) -> dict[str, Any]:
    """Chromium's net log; one cut short (a browser that did not close) is closed here."""
    text = path.read_text(encoding="utf-8", errors="replace").rstrip()
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(text.rstrip(",") + "]}")


def net_log_requests(log: dict[str, Any]) -> list[tuple[str, str]]:
    """(initiator, url) of every request Chromium's network stack started."""
    names = {value: key for key, value in log.get("constants", {}).get("logEventTypes", {}).items()}
    found = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if names.get(event.get("type")) == "URL_REQUEST_START_JOB" and "url" in params:
            found.append((str(params.get("initiator", "")), str(params["url"])))
    return found


def is_local(url: str) -> bool:
    return url.startswith(LOCAL_SCHEMES)
