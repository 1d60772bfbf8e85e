"""Makes molecule/resources/testinfra_helpers.py importable, with its asserts rewritten."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

RESOURCES = str(Path(__file__).resolve().parents[2] / "resources")
if RESOURCES not in sys.path:
    sys.path.insert(0, RESOURCES)
pytest.register_assert_rewrite("testinfra_helpers")
