"""`llmfleet report` with its new inputs and outputs: --evaluations, --bench, --prometheus,
--html and --json, written from a fact cache made with Ansible's own cache plugin."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from browser.report_inputs import sample_inputs
from helpers import PROXY_VARIABLES

from llmfleet.cli import main
from llmfleet.report import EXTRA_COLUMNS, open_fact_cache
from llmfleet.report_html import fetched_by

NO_PASSWORD_FILE = ("--prometheus-password-file", "/nonexistent/password")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def control_node(tmp_path: Path) -> dict[str, Path]:
    """The fact cache, evaluation and bench folders of a control node, written as the
    playbooks and `llmfleet bench --json` write them."""
    inputs = sample_inputs()
    folders = {name: tmp_path / name for name in ("facts", "evaluation", "bench")}
    cache = open_fact_cache(folders["facts"])
    for host, facts in inputs["facts"].items():
        cache.set(host, facts)
    for name, documents in (("evaluation", "evaluations"), ("bench", "benches")):
        folders[name].mkdir()
        for host, document in inputs[documents].items():
            (folders[name] / f"{host}.json").write_text(json.dumps(document))
    return folders


def args_of(folders: dict[str, Path], *extra: str) -> list[str]:
    return [
        "report",
        *("--facts", str(folders["facts"])),
        *("--evaluations", str(folders["evaluation"])),
        *("--bench", str(folders["bench"])),
        *extra,
    ]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_table_gains_the_new_columns(
    control_node: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args_of(control_node)) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert header.startswith("host") and all(column in header for column in EXTRA_COLUMNS)
    [row] = [line for line in out.splitlines() if line.startswith("fl-gpu-a5000")]
    assert "enterprise (detected)" in row and "61.2 GiB/s" in row and "66 %" in row
    assert row.rstrip().endswith("qwen2.5-7b-instruct-q4_k_m.gguf")


def test_json_to_standard_output_instead_of_the_table(
    control_node: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args_of(control_node, "--json", "-")) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["schema"] == "llmfleet.report/1"
    assert [host["host"] for host in document["hosts"]] == [
        "fl-cpu",
        "fl-gpu-a100",
        "fl-gpu-a5000",
        "fl-gpu-t4",
        "fresh-01",
    ]
    assert document["prometheus"] is None and document["problems"] == []
    assert document["inputs"]["bench"] == str(control_node["bench"])


def test_html_and_json_files(
    control_node: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page, data = tmp_path / "out" / "fleet.html", tmp_path / "out" / "fleet.json"
    assert main(args_of(control_node, "--html", str(page), "--json", str(data))) == 0
    captured = capsys.readouterr()
    assert "fl-gpu-a5000" in captured.out  # the table still
    assert f"wrote {page} (5 hosts)" in captured.err and f"wrote {data} (5 hosts)" in captured.err
    html = page.read_text()
    assert fetched_by(html) == [] and 'data-host="fl-gpu-t4"' in html
    assert json.loads(data.read_text())["fleet"]["hosts"] == 5


def test_an_unreachable_prometheus_is_said_and_the_report_goes_on(
    control_node: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-pw\n")
    url = f"http://127.0.0.1:{closed_port()}"
    extra = ("--prometheus", url, "--prometheus-user", "metrics")
    extra += ("--prometheus-password-file", str(secret), "--json", str(tmp_path / "r.json"))
    assert main(args_of(control_node, *extra)) == 0
    captured = capsys.readouterr()
    assert f"cannot reach Prometheus at {url}" in captured.err
    assert "the report goes on without live figures" in captured.err
    assert "Prometheus: cannot reach" in captured.out
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["prometheus"]["reachable"] is False
    assert "s3cret-pw" not in captured.out + captured.err + (tmp_path / "r.json").read_text()


def test_live_figures_from_prometheus(
    control_node: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_report_prometheus import PASSWORD, USER, FakePrometheus, sample_vectors, serve

    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    with serve(FakePrometheus(vectors=sample_vectors())) as fake:
        extra = ("--prometheus", fake.url, "--prometheus-user", USER)
        extra += ("--prometheus-password-file", str(secret), "--json", "-")
        assert main(args_of(control_node, *extra)) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["prometheus"]["reachable"] is True
    assert document["fleet"]["alerts_firing"] == 3
    t4 = next(host for host in document["hosts"] if host["host"] == "fl-gpu-t4")
    assert t4["summary"]["vram_free_mib"] == 10240 and t4["answers"] is True


def test_documents_that_cannot_be_used_are_named(
    control_node: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (control_node["bench"] / "broken.json").write_text("{not json")
    (control_node["bench"] / "old.json").write_text('{"schema": "llmfleet.bench/1"}')
    bad = json.loads((control_node["bench"] / "fl-cpu.json").read_text())
    bad["levels"][0]["succeeded"] = "all"
    (control_node["bench"] / "fl-cpu.json").write_text(json.dumps(bad))
    assert main(args_of(control_node, "--json", "-")) == 0
    problems = json.loads(capsys.readouterr().out)["problems"]
    folder = control_node["bench"]
    assert problems[0].startswith(f"{folder}/broken.json: not JSON")
    assert problems[1].startswith(f"{folder}/fl-cpu.json: levels/0/succeeded: 'all' is not")
    assert problems[2] == (
        f"{folder}/old.json: schema is 'llmfleet.bench/1', not 'llmfleet.bench/2'; left out"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--prometheus", "mon:9090"), "is not an http:// or https:// URL"),
        (("--prometheus-user", "metrics"), "need --prometheus"),
        (
            ("--prometheus", "http://mon:9090", "--prometheus-user", "metrics"),
            "together",
        ),
        (
            ("--prometheus", "http://mon:9090", "--prometheus-user", "m", *NO_PASSWORD_FILE),
            "cannot read the Prometheus password file /nonexistent/password",
        ),
        (("--prometheus", "http://mon:9090", "--prometheus-timeout", "0"), "more than 0"),
    ],
)
def test_bad_options_exit_2_naming_them(
    control_node: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    message: str,
) -> None:
    assert main(args_of(control_node, *extra)) == 2
    assert message in capsys.readouterr().err


def test_an_unwritable_page_exits_1(
    control_node: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(args_of(control_node, "--html", str(blocker / "page.html"))) == 1
    assert f"cannot write {blocker / 'page.html'}" in capsys.readouterr().err


def test_folders_that_do_not_exist_hold_nothing(
    control_node: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders: dict[str, Any] = {**control_node, "evaluation": tmp_path / "none", "bench": tmp_path}
    assert main(args_of(folders, "--json", "-")) == 0
    document = json.loads(capsys.readouterr().out)
    assert all(host["bench"] is None for host in document["hosts"])
