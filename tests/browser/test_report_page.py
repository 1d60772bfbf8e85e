"""The report page in a real browser: Debian's headless Chromium, offline.

Which page: ``$LLMFLEET_REPORT_HTML`` (a report the scenario wrote from its real results),
with the hosts it must show in ``$LLMFLEET_REPORT_HOSTS`` (comma- or space-separated);
without it, a page rendered here from the unit tests' inputs (tests/browser/report_inputs.py),
so the test runs in CI outside the scenario too. Skipped only where /usr/bin/chromium
(``$LLMFLEET_CHROMIUM``) is missing.

Asserted on the rendered page: every host's section is there; every plot is drawn (its
SVG has a size and painted series: paths, rects or dots with an extent); the page made no
request but ``data:``, ``file:`` and ``about:`` ones (DevTools' events), Chromium's net
log holds no request from the page, and nothing was refused or failed (console, CSP,
exceptions); the tables sort by a click. Chromium runs in a network namespace with no
route where the machine allows one (``unshare --net``), so nothing could leave anyway.

Artifacts, in ``$LLMFLEET_ARTIFACTS`` (default: this test's pytest tmp folder):
``report.png`` (the whole page), ``report-requests.json`` (what the page and Chromium
requested, the plots as drawn), and the page itself when it was rendered here; the
screenshot's path is printed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from browser.chromium import (
    BROWSER_INITIATOR,
    CHROMIUM,
    chromium,
    is_local,
    isolation,
    net_log_requests,
    read_net_log,
)
from browser.report_inputs import HOSTS, sample_inputs

from llmfleet.report_data import build_report
from llmfleet.report_html import render_html

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian: apt-get install chromium)"
)

#: What the page shows of itself: its host sections and each plot's drawing.
PAGE_STATE = """
(() => {
  const hosts = Array.from(document.querySelectorAll("section.host"), (s) => s.dataset.host);
  const plots = Array.from(document.querySelectorAll("figure.plot"), (figure) => {
    const svg = figure.querySelector("svg");
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const shapes = svg ? Array.from(svg.querySelectorAll(
      ".series path, .series rect, .series circle")) : [];
    const drawn = shapes.filter((shape) => {
      const extent = shape.getBBox();
      const hasPath = shape.tagName !== "path" || (shape.getAttribute("d") || "").trim() !== "";
      return hasPath && (extent.width > 0 || extent.height > 0);
    });
    const section = figure.closest("section.host");
    return {id: figure.id, title: figure.dataset.plot, host: section ? section.dataset.host : null,
            width: box.width, height: box.height, shapes: shapes.length, drawn: drawn.length};
  });
  return {title: document.title, hosts: hosts, plots: plots};
})()
"""

#: Click a header of the overview table; the column's cells, top to bottom, after it.
SORT_BY = """
((column) => {
  const table = document.querySelector("table#overview");
  table.tHead.rows[0].cells[column].querySelector("button").click();
  return Array.from(table.tBodies[0].rows, (row) => row.cells[column].getAttribute("data-sort")
                                                    ?? row.cells[column].textContent.trim());
})(%d)
"""


def expected_hosts() -> list[str]:
    return [
        host for host in re.split(r"[\s,]+", os.environ.get("LLMFLEET_REPORT_HOSTS", "")) if host
    ]


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LLMFLEET_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def report_page(tmp_path: Path) -> tuple[Path, list[str], bool]:
    """(the page, the hosts it must show, whether it was rendered here)."""
    given = os.environ.get("LLMFLEET_REPORT_HTML")
    if given:
        page = Path(given).resolve()
        assert page.is_file(), f"LLMFLEET_REPORT_HTML={given}: no such file"
        hosts = expected_hosts()
        assert hosts, "LLMFLEET_REPORT_HOSTS names no host: say which hosts the page must show"
        return page, hosts, False
    inputs = sample_inputs()
    report = build_report(
        inputs["facts"],
        inputs["evaluations"],
        inputs["benches"],
        inputs["prometheus"],
        generated_at="2026-11-30T07:00:00+00:00",
        inputs={"facts": ".cache/facts", "evaluations": ".cache/evaluation"},
    )
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    return page, list(HOSTS), True


def load(workdir: Path, page: Path, wrapper: list[str], sort: bool = True) -> dict[str, Any]:
    """Open `page` in a fresh Chromium: what it showed (and, with `sort`, how its overview
    table sorted), what it requested and logged, a screenshot, Chromium's own requests."""
    seen: dict[str, Any] = {"sorted": {}}
    with chromium(workdir, wrapper) as (session, netlog):
        session.call("Page.navigate", url=page.as_uri())
        session.wait_for("Page.loadEventFired")
        session.drain(1.0)  # a request made after the load event is caught too
        seen["state"] = session.evaluate(PAGE_STATE)
        seen["shot"] = session.screenshot(workdir / "page.png")
        if sort:
            seen["sorted"] = {
                "host": [session.evaluate(SORT_BY % 0), session.evaluate(SORT_BY % 0)],
                "usable VRAM": [session.evaluate(SORT_BY % 3)],
            }
        session.drain(0.5)
        seen["requests"] = session.requests()
        seen["problems"] = session.problems()
    seen["browser_requests"] = net_log_requests(read_net_log(netlog))
    return seen


def test_report_page_renders_offline(
    report_page: tuple[Path, list[str], bool],
    artifacts: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    page, hosts, rendered_here = report_page
    wrapper = isolation()
    seen = load(tmp_path / "chromium", page, wrapper)
    state = seen["state"]
    screenshot = artifacts / "report.png"
    screenshot.write_bytes(seen["shot"].read_bytes())
    if rendered_here:
        (artifacts / "report.html").write_bytes(page.read_bytes())
    (artifacts / "report-requests.json").write_text(
        json.dumps(
            {
                "page": str(page),
                "network_namespace": " ".join(wrapper) or None,
                "page_requests": seen["requests"],
                "browser_requests": seen["browser_requests"],
                "problems": seen["problems"],
                "plots": state["plots"],
            },
            indent=2,
        )
        + "\n"
    )
    with capsys.disabled():
        print(f"\nreport page: {page}\nscreenshot:  {screenshot}")
        print(f"network namespace: {' '.join(wrapper) or 'none available here'}")

    # every host is there
    missing = [host for host in hosts if host not in state["hosts"]]
    assert not missing, f"no section for {missing}; the page has {state['hosts']}"

    # every plot is drawn
    assert state["plots"], "the page has no plot"
    undrawn = [
        plot
        for plot in state["plots"]
        if plot["drawn"] == 0 or plot["width"] < 50 or plot["height"] < 50
    ]
    assert not undrawn, f"plots without a drawing: {undrawn}"
    if rendered_here:
        plots_by_host = {
            host: {plot["title"] for plot in state["plots"] if plot["host"] == host}
            for host in hosts
        }
        for host in ("fl-gpu-a5000", "fl-gpu-a100", "fl-cpu"):  # the hosts with bench runs
            assert "decode tokens/s against concurrency" in plots_by_host[host], plots_by_host
        assert "VRAM per GPU" in plots_by_host["fl-gpu-t4"]
        fleet = {plot["title"] for plot in state["plots"] if plot["host"] is None}
        assert fleet == {
            "hosts by tier",
            "capacity left per tier",
            "decode against the physical limit",
        }

    # nothing requested but the page itself (and data: URLs)
    remote = [url for url in seen["requests"] if not is_local(url)]
    assert not remote, f"the page requested {remote}"
    assert seen["requests"][0] == page.as_uri()
    from_page = [
        (initiator, url)
        for initiator, url in seen["browser_requests"]
        if initiator != BROWSER_INITIATOR
    ]
    assert not from_page, f"Chromium's net log has requests from the page: {from_page}"
    assert not seen["problems"], seen["problems"]

    # the tables sort without a server
    ascending, descending = seen["sorted"]["host"]
    assert ascending == sorted(ascending, key=str.lower) and len(ascending) == len(state["hosts"])
    assert descending == ascending[::-1]
    [vram] = seen["sorted"]["usable VRAM"]
    known = [float(value) for value in vram if value not in ("", None)]
    assert known == sorted(known)
    assert all(value in ("", None) for value in vram[len(known) :]), vram  # unknown last

    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_checks_see_a_page_that_fetches(tmp_path: Path) -> None:
    """The same checks on a page that fetches: each must see it (the test is no placebo)."""
    page = tmp_path / "leaky.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="http://192.0.2.1/logo.png">'
        '<script>fetch("http://llmfleet.invalid/data.json").catch(() => {});</script>'
        "</body></html>\n"
    )
    seen = load(tmp_path / "chromium", page, isolation(), sort=False)
    remote = {url for url in seen["requests"] if not is_local(url)}
    assert remote == {"http://192.0.2.1/logo.png", "http://llmfleet.invalid/data.json"}
    from_page = {
        url for initiator, url in seen["browser_requests"] if initiator != BROWSER_INITIATOR
    }
    assert from_page == remote
    assert any("load failed" in problem for problem in seen["problems"])
