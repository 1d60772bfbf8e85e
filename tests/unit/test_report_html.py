"""`llmfleet report --html`: the page, checked as text (the browser test opens it in Chromium)."""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import re
from typing import Any

import pytest
from browser.report_inputs import HOSTS, sample_inputs

from llmfleet.report_data import build_report
from llmfleet.report_html import PageError, fetched_by, render_html, svg_of


def page_of(inputs: dict[str, Any], prometheus: Any = "sample") -> str:
    report = build_report(
        inputs["facts"],
        inputs["evaluations"],
        inputs["benches"],
        inputs["prometheus"] if prometheus == "sample" else prometheus,
        generated_at="2026-11-30T07:00:00+00:00",
    )
    return render_html(report)


@pytest.fixture(scope="module")
def inputs() -> dict[str, Any]:
    return sample_inputs()


@pytest.fixture(scope="module")
def page(inputs: dict[str, Any]) -> str:
    return page_of(inputs)


def test_the_page_fetches_nothing(page: str) -> None:
    assert fetched_by(page) == []
    lowered = page.lower()
    for needle in ("<script src", "<link", "url(http", "@import", "<iframe", "@font-face"):
        assert needle not in lowered, needle
    assert "http://" not in re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", page).replace(
        "http://fl-",
        "",  # the bench endpoints and Prometheus' URL, shown as text
    )


def test_a_content_security_policy_allows_the_one_script_alone(page: str) -> None:
    [policy] = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    policy = html.unescape(policy)
    assert "default-src 'none'" in policy
    [script] = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert page.count("<script") == 1  # pygal's own scripts are gone


def test_every_host_has_its_section(page: str) -> None:
    assert re.findall(r'<section class="host" id="host-\d+" data-host="([^"]+)"', page) == sorted(
        HOSTS
    )


def test_plots_are_inline_svg_with_stable_ids(inputs: dict[str, Any], page: str) -> None:
    figures = re.findall(r'<figure class="plot" id="([^"]+)" data-plot="([^"]+)"><svg ', page)
    ids = [plot_id for plot_id, _ in figures]
    assert len(ids) == len(set(ids)) == page.count('<figure class="plot"')
    assert set(ids) >= {
        "plot-fleet-tiers",
        "plot-fleet-capacity",
        "plot-fleet-fraction",
        "plot-host-3-decode",  # fl-gpu-a5000
        "plot-host-3-ttft",
        "plot-host-3-tpot",
        "plot-host-3-vram",
        "plot-host-4-vram",  # fl-gpu-t4: no bench
    }
    assert not any(plot_id.startswith("plot-host-5") for plot_id in ids)  # fresh-01: no data
    assert page == page_of(inputs)  # the same inputs, the same page
    assert "<!--" not in page.split("<body>", 1)[1]


def test_tables_sort_and_show_the_figures(page: str) -> None:
    # tiers, hosts; GPUs (all but fl-cpu); colors (all but fresh-01); bench (three hosts)
    assert page.count('<table class="sortable') == 1 + 1 + 4 + 4 + 3
    assert 'data-sort="49128"' in page  # fl-gpu-a5000's usable VRAM, in MiB
    assert "x8 of x16" in page  # the narrow link
    assert "LlmfleetGpuHot" in page and "LlmfleetNoTraffic" in page
    assert "fit in the 128 MiB last-level cache" in page


def test_without_prometheus_the_page_says_what_it_does_not_know(inputs: dict[str, Any]) -> None:
    page = page_of(inputs, prometheus=None)
    assert "Prometheus was not asked" in page
    assert "plot-fleet-capacity" not in page  # capacity is a live figure
    assert fetched_by(page) == []
    down = page_of(inputs, prometheus={"url": "http://mon:9090", "error": "refused", "series": {}})
    assert "Prometheus did not answer: refused" in down


def test_text_from_the_inputs_is_escaped_and_fetches_nothing(inputs: dict[str, Any]) -> None:
    changed = copy.deepcopy(inputs)
    changed["facts"]['<img src="http://x/y.png">'] = changed["facts"].pop("fresh-01")
    alert = changed["prometheus"]["series"]["alerts"][0]["metric"]
    alert["summary"] = "see url(http://x/) and <script src=http://x/a.js></script>"
    page = page_of(changed)
    assert '<img src="http://x/y.png">' not in page
    assert 'data-host="&lt;img src=&#34;http://x/y.png&#34;&gt;"' in page
    assert fetched_by(page) == []


@pytest.mark.parametrize(
    ("html", "found"),
    [
        ('<img src="http://192.0.2.1/a.png">', "<img src='http://192.0.2.1/a.png'>"),
        ('<link rel="stylesheet" href="a.css">', "<link>"),
        ("<style>@import 'x.css';</style>", "<style> '@import'"),
        ('<div style="background: url(https://x/a.png)"></div>', "<div style="),
        ('<svg><image xlink:href="file:///etc/passwd"/></svg>', "<image xlink:href="),
        ('<script src="data:text/javascript,1"></script>', None),  # data: is local
        ('<a href="#host-1">x</a><use href="#glyph"/>', None),
    ],
)
def test_the_guard_sees_what_a_browser_would_fetch(html: str, found: str | None) -> None:
    seen = fetched_by(html)
    assert (seen == []) if found is None else any(item.startswith(found) for item in seen), seen


def test_a_page_that_would_fetch_is_not_written(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmfleet import report_html

    monkeypatch.setattr(report_html, "SORT_SCRIPT", "</script><img src='http://x/'><script>")
    with pytest.raises(PageError, match="would fetch"):
        render_html(build_report({}, {}, {}, None))


def test_a_plot_keeps_no_script_or_comment() -> None:
    import pygal

    chart = pygal.Bar(title="t")  # pygal's defaults: its CDN script, a config script, comments
    chart.add("a", [1, 2])
    svg = svg_of(chart, "plot-x")
    assert "<script" not in svg and "<!--" not in svg and "pygal.org" not in svg
    assert 'id="plot-x"' in svg and "#plot-x " in svg
    assert "<title>" in svg  # each value's tooltip, shown without a script
