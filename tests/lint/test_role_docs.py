"""Each role's README is generated from its argument_specs by aar-doc and must be current.

`scripts/docs.sh --check ROLE` runs aar-doc (pinned in pyproject.toml) on a temporary copy of
roles/ROLE/README.md and compares: the part between the aar-doc markers must be what aar-doc
writes from meta/argument_specs.yml and meta/main.yml now. The text above the markers is the
role's hand-written introduction. Offline, a few seconds for every role (run side by side).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "scripts" / "docs.sh"
BEGIN = "<!-- BEGIN_ANSIBLE_DOCS -->"
END = "<!-- END_ANSIBLE_DOCS -->"
ROLES = sorted(path.parents[1].name for path in REPO.glob("roles/*/meta/argument_specs.yml"))


def aar_doc() -> str:
    """aar-doc from the interpreter's own environment (the venv), else from PATH."""
    local = Path(sys.executable).parent / "aar-doc"
    found = str(local) if local.exists() else shutil.which("aar-doc")
    if found is None:
        pytest.fail(
            "aar-doc is not installed: run scripts/dev.sh test, which installs the pinned tools "
            "(or .venv/bin/pip install -e '.[dev]')"
        )
    return found


@pytest.fixture(scope="module")
def checks() -> dict[str, subprocess.CompletedProcess[str]]:
    """`scripts/docs.sh --check <role>` for every role, side by side."""
    environment = {**os.environ, "AAR_DOC": aar_doc()}

    def check(role: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(DOCS), "--check", role],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )

    with ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 2)) as pool:
        return dict(zip(ROLES, pool.map(check, ROLES), strict=True))


def test_every_role_is_found() -> None:
    assert ROLES, "no role with meta/argument_specs.yml under roles/"


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_is_what_aar_doc_writes(
    role: str, checks: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = checks[role]
    assert result.returncode == 0, (
        f"roles/{role}/README.md is not what aar-doc generates from "
        f"roles/{role}/meta/argument_specs.yml now; regenerate it with: scripts/docs.sh {role}\n"
        f"{result.stdout}{result.stderr}"
    )


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_has_an_introduction(role: str) -> None:
    readme = REPO / "roles" / role / "README.md"
    assert readme.is_file(), f"roles/{role}/README.md is missing: run scripts/docs.sh {role}"
    text = readme.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1, (
        f"roles/{role}/README.md needs the aar-doc markers {BEGIN} and {END} once each"
    )
    introduction = text.split(BEGIN)[0].strip()
    assert introduction.startswith(f"# Role `{role}`"), (
        f"roles/{role}/README.md starts with a hand-written introduction above {BEGIN}: "
        f"a title '# Role `{role}`', then what the role does and who enters it where"
    )
    assert len(introduction.splitlines()) > 2, (
        f"roles/{role}/README.md: the introduction above {BEGIN} says what the role does"
    )
