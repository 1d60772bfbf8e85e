"""The model catalog (model_store_models) and its draft models for speculative decoding: the
checks the llmfleet role runs on every host before anything changes, and the draft that
model_store resolves against the bundle's manifest."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import load_module_file

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "filter" / "llmfleet_models.py"
models = load_module_file("llmfleet_models_filters", PLUGIN)

DEFAULTS = yaml.safe_load((REPO / "roles" / "model_store" / "defaults" / "main.yml").read_text())
DRAFT_DEFAULTS = DEFAULTS["model_store_draft_defaults"]
SMOL = {
    "tier": "cpu",
    "name": "SmolLM2-135M-Instruct",
    "artifact": "model-smollm2-135m-instruct",
    "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "context_length": 8192,
}
QWEN_32B = {
    "tier": "enterprise",
    "name": "DeepSeek-R1-Distill-Qwen-32B",
    "artifact": "model-deepseek-r1-distill-qwen-32b-q4_k_m",
    "file": "DeepSeek-R1-Distill-Qwen-32B-Q4_K_M.gguf",
    "context_length": 32768,
    "draft": {
        "name": "DeepSeek-R1-Distill-Qwen-1.5B",
        "artifact": "model-deepseek-r1-distill-qwen-1.5b-q4_k_m",
        "file": "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf",
        "max_tokens": 8,
    },
}
ARTIFACTS = {
    "model-deepseek-r1-distill-qwen-1.5b-q4_k_m": {"sha256": "1" * 64, "size": 1117320736},
    "model-smollm2-135m-instruct": {"sha256": "2" * 64, "size": 98362432},
}


def problems(catalog: Any, defaults: Any = DRAFT_DEFAULTS) -> list[str]:
    before = copy.deepcopy(catalog)
    found = models.catalog_problems(catalog, defaults)
    assert catalog == before, "the filter changed its input"
    return found


def test_the_roles_default_catalog_and_draft_defaults_are_fine() -> None:
    assert problems(DEFAULTS["model_store_models"]) == []
    assert models.draft_defaults_problems(DRAFT_DEFAULTS) == []
    assert not any("draft" in entry for entry in DEFAULTS["model_store_models"])  # opt-in


def test_a_tier_with_a_draft_model_is_fine() -> None:
    assert problems([SMOL, QWEN_32B]) == []
    self_draft = {**SMOL, "draft": {k: SMOL[k] for k in ("name", "artifact", "file")}}
    assert problems([self_draft, {**QWEN_32B, "draft": None}]) == []


def draft(**changes: Any) -> list[dict[str, Any]]:
    entry = copy.deepcopy(QWEN_32B)
    for key, value in changes.items():
        if value is None:
            entry["draft"].pop(key, None)
        else:
            entry["draft"][key] = value
    return [SMOL, entry]


WHERE = "model_store_models[1] (tier enterprise).draft"


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        (draft(max_tokens=0), f"{WHERE}.max_tokens is 0; allowed: a whole number from 1 to 256"),
        (draft(max_tokens=2.5), f"{WHERE}.max_tokens is 2.5; allowed: a whole number"),
        (draft(max_tokens=True), f"{WHERE}.max_tokens is True; allowed: a whole number"),
        (draft(min_tokens=-1), f"{WHERE}.min_tokens is -1; allowed: a whole number from 0 to 256"),
        (
            draft(min_tokens=9),
            f"{WHERE}.min_tokens is 9, more than max_tokens 8; allowed: from 0 to max_tokens",
        ),
        (draft(p_min=1.2), f"{WHERE}.p_min is 1.2; allowed: a number from 0 to 1"),
        (draft(p_min="nan"), f"{WHERE}.p_min is 'nan'; allowed: a number from 0 to 1"),
        (draft(artifact=None), f"{WHERE}.artifact is None; allowed: a name (a string, not empty)"),
        (draft(file=" "), f"{WHERE}.file is ' '; allowed: a name"),
        (draft(max_token=4), f"{WHERE} has unknown keys max_token; allowed: name, artifact, file"),
        (
            [SMOL, {**QWEN_32B, "draft": "qwen-1.5b"}],
            f"{WHERE} is 'qwen-1.5b'; allowed: a mapping with name, artifact, file",
        ),
        (
            [{**SMOL, "draft": {"name": SMOL["name"], "file": SMOL["file"], "artifact": "other"}}],
            "model_store_models[0] (tier cpu).draft is the file of the model itself "
            "(SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf) but names another artifact",
        ),
        ([SMOL, {**SMOL, "name": "x"}], "names the tiers cpu more than once"),
        ([{**SMOL, "context_length": 0}], "(tier cpu).context_length is 0; allowed: a whole"),
        ([{**SMOL, "tier": ""}], "model_store_models[0].tier is ''; allowed: a name"),
        (["cpu"], "model_store_models[0] is 'cpu'; allowed: a mapping with tier, name"),
        ({"cpu": SMOL}, "model_store_models is {'cpu':"),
    ],
)
def test_bad_catalogs_are_named(catalog: Any, message: str) -> None:
    found = problems(catalog)
    assert any(message in problem for problem in found), found


def test_bad_draft_defaults_are_named_and_do_not_hide_the_catalogs() -> None:
    found = problems(draft(max_tokens=0), {"max_tokens": 300, "p_min": 0.5, "extra": 1})
    assert found == [
        "model_store_draft_defaults has unknown keys extra; allowed: max_tokens, min_tokens, p_min",
        "model_store_draft_defaults.max_tokens is 300; allowed: a whole number from 1 to 256",
        "model_store_draft_defaults.min_tokens is missing; allowed: a whole number from 0 to 256",
        f"{WHERE}.max_tokens is 0; allowed: a whole number from 1 to 256",
    ]
    assert problems([SMOL], ["max_tokens"]) == [
        "model_store_draft_defaults is ['max_tokens']; allowed: a mapping of max_tokens, "
        "min_tokens, p_min"
    ]
    # without the defaults (a play without model_store): the draft's own numbers only
    assert models.catalog_problems(draft(min_tokens=3), None) == []
    assert models.catalog_problems(draft(max_tokens=0), None) == [
        f"{WHERE}.max_tokens is 0; allowed: a whole number from 1 to 256"
    ]


def test_the_draft_of_an_entry_from_the_manifest() -> None:
    chosen = models.model_draft(QWEN_32B, ARTIFACTS, "/data/models/", DRAFT_DEFAULTS)
    assert chosen == {
        "name": "DeepSeek-R1-Distill-Qwen-1.5B",
        "path": "/data/models/DeepSeek-R1-Distill-Qwen-1.5B/" + QWEN_32B["draft"]["file"],
        "artifact": "model-deepseek-r1-distill-qwen-1.5b-q4_k_m",
        "sha256": "1" * 64,
        "size": 1117320736,
        "max_tokens": 8,  # its own
        "min_tokens": 0,  # the defaults'
        "p_min": 0.75,
    }
    assert models.model_draft(SMOL, ARTIFACTS, "/data/models", DRAFT_DEFAULTS) is None
    assert models.model_draft({**SMOL, "draft": None}, ARTIFACTS, "/m", DRAFT_DEFAULTS) is None
    numbers = models.draft_settings({"max_tokens": "12", "p_min": "0.5"}, DRAFT_DEFAULTS)
    assert numbers == {"max_tokens": 12, "min_tokens": 0, "p_min": 0.5}


def test_the_roles_wire_the_checks_and_the_draft() -> None:
    """The llmfleet role checks the catalog on every host; model_store checks it again where
    its defaults are known, fetches the draft and hands it to the service."""
    checks = yaml.safe_load((REPO / "roles" / "llmfleet" / "tasks" / "main.yml").read_text())
    catalog_check = next(task for task in checks if "model catalog" in task["name"])
    assert "llmfleet_model_catalog_problems" in catalog_check["vars"]["__llmfleet_catalog_problems"]
    assert catalog_check["tags"] == ["always"]
    choose = (REPO / "roles" / "model_store" / "tasks" / "choose.yml").read_text()
    assert "llmfleet_model_catalog_problems(model_store_draft_defaults)" in choose
    assert "llmfleet_model_draft(" in choose
    files = yaml.safe_load((REPO / "roles" / "model_store" / "vars" / "main.yml").read_text())
    assert "model_store_model.draft" in files["__model_store_files"]
    assert set(models.FilterModule().filters()) == {
        "llmfleet_model_catalog_problems",
        "llmfleet_model_draft",
    }
