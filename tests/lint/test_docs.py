"""The root README stays the flow, the commands and links (at most 350 lines), and every
relative link in it and in docs/ points at a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\((?!https?://|#)([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_at_most_350_lines() -> None:
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 350, f"README.md has {lines} lines: move detail to docs/ or a role's README"


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(REPO)) for doc in DOCS])
def test_relative_links_resolve(doc: Path) -> None:
    missing = [
        target for target in LINK.findall(doc.read_text()) if not (doc.parent / target).exists()
    ]
    assert missing == [], f"{doc.relative_to(REPO)} links to missing files: {missing}"
