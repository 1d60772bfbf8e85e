"""`llmfleet report --html`: the report as one page that opens offline.

The page is rendered with Jinja2 from ``templates/report.html.j2`` (package data) out of
the `llmfleet.report_data` document, nothing else. It makes no request of any kind:

* plots are inline SVG drawn here by pygal (a pure-Python library that writes SVG itself:
  one small wheel for every platform, no numpy, no browser, no server); pygal's own
  scripts (its tooltips come from a CDN) are turned off and what it still adds (a
  configuration script, comments) is taken out of each plot's tree;
* fonts are the system's (a font stack in CSS, no font file);
* the one script (sortable tables) is inline, and a Content-Security-Policy in the page
  allows that script alone (by its sha256) and nothing from anywhere: a browser refuses
  any request the page might still try.
"""

from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from html.parser import HTMLParser
from typing import Any

from llmfleet.report_data import concurrency_levels

#: System fonts only: no font file is fetched or shipped.
FONT_STACK = (
    'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Liberation Sans", '
    "Arial, sans-serif"
)
COLORS = ("#1f6feb", "#d9480f", "#2f9e44", "#7048e8", "#e67700", "#0c8599", "#c2255c")
PLOT_SIZE = (640, 300)
TEMPLATE = "report.html.j2"

#: The page's one script: click a column's header to sort its table (again: the other way).
#: Cells sort by their data-sort value (a number where the cell shows one), else their text;
#: an empty data-sort (unknown) stays last either way.
SORT_SCRIPT = """
(function () {
  "use strict";
  function key(cell) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort")
                                             : cell.textContent.trim();
    if (raw === "" || raw === "-") { return null; }
    var n = Number(raw);
    return isNaN(n) ? raw.toLowerCase() : n;
  }
  function compare(a, b) {
    if (typeof a === typeof b) { return a < b ? -1 : a > b ? 1 : 0; }
    return typeof a === "number" ? -1 : 1;
  }
  function sortBy(table, column, header) {
    var body = table.tBodies[0];
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows).map(function (row, index) {
      return {row: row, index: index, key: key(row.cells[column])};
    });
    rows.sort(function (x, y) {
      if (x.key === null || y.key === null) {
        return x.key === y.key ? x.index - y.index : x.key === null ? 1 : -1;
      }
      var order = compare(x.key, y.key);
      return (ascending ? order : -order) || x.index - y.index;
    });
    rows.forEach(function (entry) { body.appendChild(entry.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) {
      cell.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      var button = header.querySelector("button");
      if (button) {
        button.addEventListener("click", function () { sortBy(table, column, header); });
      }
    });
  });
})();
"""


# -- numbers as the page shows them ------------------------------------------------------------


def gib(mib: float | None) -> str:
    return "-" if mib is None else f"{mib / 1024:.1f} GiB"


def fixed(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f}"


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.0f} %"


def sort_value(value: Any) -> str:
    """A cell's data-sort: the number, or empty for unknown."""
    if value is None or isinstance(value, bool):
        return ""
    return str(value)


def link_text(current: int | None, most: int | None, prefix: str = "") -> str:
    def shown(value: int | None) -> str:
        return "?" if value is None else f"{prefix}{value}"

    return f"{shown(current)} of {shown(most)}"


# -- plots -------------------------------------------------------------------------------------


def _style(colors: tuple[str, ...] = COLORS) -> Any:
    from pygal.style import Style

    return Style(
        background="transparent",
        plot_background="#ffffff",
        foreground="#24292f",
        foreground_strong="#24292f",
        foreground_subtle="#8c959f",
        colors=colors,
        font_family=FONT_STACK,
        label_font_size=12,
        major_label_font_size=12,
        value_font_size=11,
        legend_font_size=12,
        title_font_size=15,
        tooltip_font_size=12,
        opacity=".85",
        opacity_hover=".95",
    )


def _chart(kind: str, title: str, **config: Any) -> Any:
    import pygal

    width, height = PLOT_SIZE
    settings: dict[str, Any] = {
        "js": [],  # pygal's tooltips script comes from a CDN: none
        "disable_xml_declaration": True,
        "style": _style(),
        "width": width,
        "height": height,
        "legend_at_bottom": True,
        "truncate_legend": -1,
        "truncate_label": -1,
        "margin": 12,
        "title": title,
        **config,
    }
    return getattr(pygal, kind)(**settings)


def svg_of(chart: Any, plot_id: str) -> str:
    """The chart as inline SVG: no script, no comment, ids that are the same on every run
    (`plot_id`), and each value's tooltip as an SVG <title> (shown without a script)."""
    root = chart.render_tree()
    old_id = root.get("id", "")
    _strip(root)
    for group in root.iter("g"):
        values = [child for child in group if child.tag == "desc" and child.get("class") == "value"]
        if values and values[0].text:
            label = next(
                (c.text for c in group if c.tag == "desc" and c.get("class") == "label"), None
            )
            title = ET.Element("title")
            title.text = f"{label}: {values[0].text}" if label else values[0].text
            group.insert(0, title)
    root.set("role", "img")
    root.set("aria-label", chart.config.title or plot_id)
    svg = ET.tostring(root, encoding="unicode")
    return svg.replace(old_id, plot_id) if old_id else svg


def _strip(element: ET.Element) -> None:
    """Take scripts and comments out of `element`'s tree."""
    for child in list(element):
        if child.tag in ("script", ET.Comment) or not isinstance(child.tag, str):
            element.remove(child)
        else:
            _strip(child)


def _plot(plot_id: str, title: str, chart: Any, caption: str) -> dict[str, str]:
    return {"id": plot_id, "title": title, "svg": svg_of(chart, plot_id), "caption": caption}


def decode_plot(host: Mapping[str, Any], plot_id: str) -> dict[str, str] | None:
    """Decode tokens/s against concurrency: all streams together (measured output tokens
    over the wall clock), one stream (1 / mean TPOT), and the evaluation's physical limit."""
    levels = concurrency_levels(host.get("bench"))
    if not levels:
        return None
    engine = (host.get("evaluation") or {}).get("engine") or {}
    limit = engine.get("physical_limit_tokens_per_s")
    chart = _chart(
        "Line",
        "Decode tokens/s against concurrency",
        x_title="concurrency (requests in flight)",
        y_title="tokens/s",
        include_x_axis=True,
        dots_size=4,
        # the limit in a color of its own, apart from the guides' grey
        style=_style((COLORS[0], COLORS[1], "#c2255c")),
        value_formatter=lambda value: f"{value:,.1f}",
    )
    chart.x_labels = [str(level["concurrency"]) for level in levels]
    chart.add("all streams (output tok/s)", [level["output_tokens_per_s"] for level in levels])
    chart.add(
        "one stream (1 / mean TPOT)",
        [level["decode_tokens_per_s_per_stream"] for level in levels],
    )
    if limit:
        chart.add(
            "physical limit, one stream",
            [limit] * len(levels),
            stroke_style={"dasharray": "8, 5", "width": 3},
            show_dots=False,
        )
    caption = (
        "From llmfleet bench"
        + (f" ({host['bench']['started_at']})" if host["bench"].get("started_at") else "")
        + "; the limit is memory bandwidth over the bytes read per token."
    )
    return _plot(plot_id, "decode tokens/s against concurrency", chart, caption)


def latency_plot(
    host: Mapping[str, Any], metric: str, label: str, plot_id: str
) -> dict[str, str] | None:
    """A latency's p50, p90 and p99 (ms) at each level of the bench run."""
    levels = (host.get("bench") or {}).get("levels") or []
    if not any(level[metric][key] is not None for level in levels for key in ("p50", "p90", "p99")):
        return None
    chart = _chart(
        "Bar",
        f"{label} percentiles (ms) per level",
        y_title="ms",
        value_formatter=lambda value: f"{value:,.1f}",
        print_values=False,
    )
    chart.x_labels = [level["name"] for level in levels]
    for key in ("p50", "p90", "p99"):
        chart.add(
            key,
            [None if level[metric][key] is None else level[metric][key] * 1000 for level in levels],
        )
    return _plot(
        plot_id,
        f"{label} percentiles",
        chart,
        f"{label} per level; a percentile with too few samples is left out (see the table).",
    )


def vram_plot(host: Mapping[str, Any], plot_id: str) -> dict[str, str] | None:
    """VRAM used and free per GPU (GiB)."""
    gpus = [
        gpu
        for gpu in host.get("gpus") or []
        if gpu["vram"]["used_mib"] is not None and gpu["vram"]["free_mib"] is not None
    ]
    if not gpus:
        return None
    chart = _chart(
        "HorizontalStackedBar",
        "VRAM per GPU (GiB)",
        value_formatter=lambda value: f"{value:,.1f}",
        print_values=True,
        height=max(160, 90 + 44 * len(gpus)),
    )
    gpus.reverse()  # pygal draws the first bar at the bottom: GPU 0 goes on top
    chart.x_labels = [f"GPU {gpu['index']}" for gpu in gpus]
    chart.add("used", [gpu["vram"]["used_mib"] / 1024 for gpu in gpus])
    chart.add("free", [gpu["vram"]["free_mib"] / 1024 for gpu in gpus])
    sources = {gpu["vram"]["source"] for gpu in gpus}
    caption = (
        "Now, from Prometheus (DCGM_FI_DEV_FB_USED / FB_FREE)."
        if sources == {"prometheus"}
        else "At the evaluation's last sample, under load (no live figure)."
    )
    return _plot(plot_id, "VRAM per GPU", chart, caption)


def tiers_plot(report: Mapping[str, Any]) -> dict[str, str] | None:
    tiers = report["fleet"]["tiers"]
    if not tiers:
        return None
    chart = _chart(
        "StackedBar",
        "Hosts by tier",
        print_values=True,
        print_zeroes=False,
        value_formatter=lambda value: f"{value:g}",
        y_title="hosts",
    )
    chart.y_labels = list(range(max(tier["count"] for tier in tiers) + 1))
    chart.x_labels = [tier["tier"] for tier in tiers]
    if all(tier["answering"] is not None for tier in tiers):
        chart.add("answering", [tier["answering"] for tier in tiers])
        chart.add("not answering", [tier["count"] - tier["answering"] for tier in tiers])
        caption = "Answering: the engine answered Prometheus' last scrape."
    else:
        chart.add("hosts", [tier["count"] for tier in tiers])
        caption = "Whether they answer is unknown without Prometheus."
    return _plot("plot-fleet-tiers", "hosts by tier", chart, caption)


def capacity_plot(report: Mapping[str, Any]) -> dict[str, str] | None:
    tiers = [tier for tier in report["fleet"]["tiers"] if tier["vram_free_mib"] is not None]
    if not tiers:
        return None
    chart = _chart(
        "Bar",
        "VRAM free on answering hosts, per tier (GiB)",
        print_values=True,
        value_formatter=lambda value: f"{value:,.1f}",
        y_title="GiB",
    )
    chart.x_labels = [tier["tier"] for tier in tiers]
    chart.add("VRAM free", [tier["vram_free_mib"] / 1024 for tier in tiers])
    return _plot(
        "plot-fleet-capacity",
        "capacity left per tier",
        chart,
        "The sum of DCGM_FI_DEV_FB_FREE over the answering hosts of each tier.",
    )


def fraction_plot(report: Mapping[str, Any]) -> dict[str, str] | None:
    hosts = [host for host in report["hosts"] if host["summary"]["fraction_of_limit"] is not None]
    if not hosts:
        return None
    chart = _chart(
        "HorizontalBar",
        "Decode as a share of the physical limit (%)",
        print_values=True,
        value_formatter=lambda value: f"{value:.0f} %",
        range=(0, max(100, *(host["summary"]["fraction_of_limit"] * 100 for host in hosts))),
        show_legend=False,
        height=max(160, 90 + 36 * len(hosts)),
    )
    hosts.reverse()  # the first host on top
    chart.x_labels = [host["host"] for host in hosts]
    chart.add("decode / limit", [host["summary"]["fraction_of_limit"] * 100 for host in hosts])
    return _plot(
        "plot-fleet-fraction",
        "decode against the physical limit",
        chart,
        "One stream's decode tokens/s over memory bandwidth / bytes read per token.",
    )


def host_plots(host: Mapping[str, Any], number: int) -> list[dict[str, str]]:
    makers: Iterable[Callable[[], dict[str, str] | None]] = (
        lambda: decode_plot(host, f"plot-host-{number}-decode"),
        lambda: latency_plot(host, "ttft_s", "TTFT", f"plot-host-{number}-ttft"),
        lambda: latency_plot(host, "tpot_s", "TPOT", f"plot-host-{number}-tpot"),
        lambda: vram_plot(host, f"plot-host-{number}-vram"),
    )
    return [plot for plot in (make() for make in makers) if plot is not None]


def fleet_plots(report: Mapping[str, Any]) -> list[dict[str, str]]:
    plots = (tiers_plot(report), capacity_plot(report), fraction_plot(report))
    return [plot for plot in plots if plot is not None]


# -- the page ----------------------------------------------------------------------------------


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def content_security_policy(script: str) -> str:
    """Nothing from anywhere: no fetch, no font, no image but data:, the one script."""
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src {script_hash(script)}; base-uri 'none'; form-action 'none'"
    )


#: What the template reads of a host without an evaluation.
NO_EVALUATION: Mapping[str, Any] = {
    "measured_at": None,
    "source": None,
    "cpu": None,
    "memory_bandwidth": None,
    "engine": None,
    "cuda_program": None,
    "p2p": [],
    "verdicts": [],
}


def _environment() -> Any:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("llmfleet", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        gib=gib, fixed=fixed, ms=ms, percent=percent, sort_value=sort_value, link=link_text
    )
    return environment


def render_html(report: Mapping[str, Any]) -> str:
    """The page for a `llmfleet.report_data.build_report` document."""
    from markupsafe import Markup

    def inline(plots: list[dict[str, str]]) -> list[dict[str, Any]]:
        return [{**plot, "svg": Markup(plot["svg"])} for plot in plots]

    hosts = [
        {
            "data": host,
            "number": number,
            "evaluation": host["evaluation"] or NO_EVALUATION,
            "plots": inline(host_plots(host, number)),
        }
        for number, host in enumerate(report["hosts"], start=1)
    ]
    script = SORT_SCRIPT
    page = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            report=report,
            hosts=hosts,
            fleet_plots=inline(fleet_plots(report)),
            csp=content_security_policy(script),
            script=Markup(script),
        )
    )
    _check_offline(page)
    return page


class PageError(RuntimeError):
    """The page would make a request: a bug in the template or a plot, named."""


#: Tags that load something, whatever their attributes say.
FETCHING_TAGS = frozenset({"link", "iframe", "object", "embed", "base", "frame", "audio", "video"})
#: Attributes whose value a browser fetches or follows.
URL_ATTRIBUTES = frozenset(
    {"src", "href", "xlink:href", "action", "formaction", "poster", "srcset", "data", "ping"}
)
_CSS_URL = re.compile(r"url\(\s*['\"]?\s*(?!#|data:)|@import", re.IGNORECASE)


class _OfflineCheck(HTMLParser):
    """Collects what in a page would be fetched: tags, URL attributes, CSS url()/@import.
    Text is not looked at (a host or an alert may say "src=" and fetch nothing)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        if tag in FETCHING_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            value = (value or "").strip()
            if name in URL_ATTRIBUTES and not value.startswith(("#", "data:")):
                self.found.append(f"<{tag} {name}={value!r}>")
            if name == "style" and _CSS_URL.search(value):
                self.found.append(f"<{tag} style={value!r}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._tag = None

    def handle_endtag(self, tag: str) -> None:
        self._tag = None

    def handle_data(self, data: str) -> None:
        if self._tag == "style" and _CSS_URL.search(data):
            self.found.append(f"<style> {_CSS_URL.search(data).group(0)!r}")  # type: ignore[union-attr]


def fetched_by(page: str) -> list[str]:
    """What `page` would make a browser fetch (empty: nothing)."""
    check = _OfflineCheck()
    check.feed(page)
    check.close()
    return check.found


def _check_offline(page: str) -> None:
    found = fetched_by(page)
    if found:
        raise PageError(f"the report page would fetch: {', '.join(found[:5])}")
