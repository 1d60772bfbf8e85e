"""Blue/green colors, the upgrade mode, upgrade plans and rollback targets."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_module_file

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "llmfleet_fleet.py"
fleet = load_module_file("llmfleet_fleet_filters", PLUGIN)

COLORS = {"blue": {"port": 8081}, "green": {"port": 8082}}
GIB = 1024**3
MIB = 1024**2

RTX_3060 = {
    "driver_loaded": True,
    "gpu_count": 1,
    "usable_vram_mib": 12288,
    "memory_total_mib": 64000,
}
TWO_A100 = {
    "driver_loaded": True,
    "gpu_count": 2,
    "usable_vram_mib": 163840,
    "memory_total_mib": 515000,
}
CPU_HOST = {
    "driver_loaded": False,
    "gpu_count": 0,
    "usable_vram_mib": None,
    "memory_total_mib": 24105,
}
# GPUs seen on the PCI bus but no driver answering: the model runs from RAM.
NO_DRIVER = {
    "driver_loaded": False,
    "gpu_count": 1,
    "usable_vram_mib": None,
    "memory_total_mib": 2048,
}


def model(name: str, size: int, sha: str = "a" * 64) -> dict[str, object]:
    return {"name": name, "path": f"/data/models/{name}/{name}.gguf", "sha256": sha, "size": size,
            "context_length": 8192, "tier": "cpu"}  # fmt: skip


SMOL = model("SmolLM2", 98 * MIB)
QWEN7 = model("Qwen-7B", int(4.4 * GIB), "b" * 64)
QWEN14 = model("Qwen-14B", int(8.4 * GIB), "c" * 64)


def record(
    build: str, m: dict[str, object], port: int = 8081, args: str = "--ctx-size 2048"
) -> dict[str, object]:
    return fleet.color_record(build, m, args, port)


def installed(active: str = "blue", previous: str = "") -> dict[str, object]:
    colors = {active: record("b1", QWEN7, COLORS[active]["port"])}
    if previous:
        colors[previous] = record("b0", SMOL, COLORS[previous]["port"])
    return {"active": active, "previous": previous, "colors": colors}


# --- colors -------------------------------------------------------------------


def test_first_install_is_blue() -> None:
    assert fleet.first_color(COLORS) == "blue"
    assert fleet.active_color(None, COLORS) == "blue"
    assert fleet.active_color({}, COLORS) == "blue"
    assert fleet.active_color({"active": ""}, COLORS) == "blue"


def test_active_and_other_color() -> None:
    assert fleet.active_color({"active": "green"}, COLORS) == "green"
    assert fleet.other_color(COLORS, "green") == "blue"
    assert fleet.other_color(COLORS, "blue") == "green"


def test_unknown_active_color_names_it() -> None:
    with pytest.raises(fleet.FleetError, match=r"'red'.*blue, green"):
        fleet.active_color({"active": "red"}, COLORS)
    with pytest.raises(fleet.FleetError, match="unknown color 'red'"):
        fleet.other_color(COLORS, "red")


@pytest.mark.parametrize(
    ("colors", "message"),
    [
        ({"blue": {"port": 8081}}, "exactly two colors"),
        ({"blue": {"port": 8081}, "green": {"port": 8081}}, "two different ports"),
        ({"blue": {"port": 8081}, "green": {"port": "8082"}}, "green.port"),
        ({"blue": {"port": 0}, "green": {"port": 8082}}, "blue.port"),
        ({"blue": {}, "green": {"port": 8082}}, "blue.port"),
        ([8081, 8082], "exactly two colors"),
    ],
)
def test_bad_colors(colors: object, message: str) -> None:
    with pytest.raises(fleet.FleetError, match=message):
        fleet.first_color(colors)  # type: ignore[arg-type]


# --- upgrade mode ---------------------------------------------------------------


def test_two_7b_models_fit_an_a100_pair() -> None:
    mode = fleet.upgrade_mode(TWO_A100, QWEN7["size"], QWEN14["size"], 1024)
    assert mode["mode"] == "blue_green"
    assert mode["memory"] == "VRAM"
    assert mode["available_mib"] == 163840 - 2 * 1024
    assert mode["fits"] is True


def test_a_7b_and_a_14b_do_not_fit_a_3060() -> None:
    # Two 7B (2 x 4506 MiB x 1.2 = 10815 MiB) fit the 11264 MiB left of 12 GiB.
    mode = fleet.upgrade_mode(RTX_3060, QWEN7["size"], QWEN7["size"], 1024)
    assert mode["mode"] == "blue_green"
    assert mode["needed_mib"] == 10815
    mode = fleet.upgrade_mode(RTX_3060, QWEN7["size"], QWEN14["size"], 1024)
    assert mode["mode"] == "in_place"
    assert mode["fits"] is False
    assert "two models do not fit" in mode["reason"]
    assert "11264 MiB of VRAM" in mode["reason"]


def test_boundary_is_inclusive() -> None:
    hardware = {"driver_loaded": True, "gpu_count": 1, "usable_vram_mib": 3400 + 1024}
    mode = fleet.upgrade_mode(hardware, 1000 * MIB, 1000 * MIB, 1024, overhead=1.7)
    assert mode["needed_mib"] == 3400
    assert mode["mode"] == "blue_green"
    hardware["usable_vram_mib"] -= 1
    assert (
        fleet.upgrade_mode(hardware, 1000 * MIB, 1000 * MIB, 1024, overhead=1.7)["mode"]
        == "in_place"
    )


def test_cpu_host_counts_ram_and_headroom_once() -> None:
    mode = fleet.upgrade_mode(CPU_HOST, SMOL["size"], SMOL["size"], 1024)
    assert mode["memory"] == "RAM"
    assert mode["available_mib"] == 24105 - 1024
    assert mode["needed_mib"] == 236
    assert mode["mode"] == "blue_green"


def test_no_driver_uses_ram() -> None:
    mode = fleet.upgrade_mode(NO_DRIVER, SMOL["size"], SMOL["size"], 1024)
    assert mode["memory"] == "RAM"
    assert mode["available_mib"] == 1024
    assert mode["mode"] == "blue_green"
    assert fleet.upgrade_mode(NO_DRIVER, QWEN7["size"], QWEN7["size"], 1024)["mode"] == "in_place"


def test_unknown_memory_is_in_place() -> None:
    mode = fleet.upgrade_mode({}, SMOL["size"], SMOL["size"], 1024)
    assert mode["available_mib"] == 0
    assert mode["mode"] == "in_place"


def test_sizes_as_strings_from_facts() -> None:
    assert fleet.upgrade_mode(CPU_HOST, str(SMOL["size"]), str(SMOL["size"]))["needed_mib"] == 236


@pytest.mark.parametrize("strategy", ["blue_green", "in_place"])
def test_a_forced_strategy_wins(strategy: str) -> None:
    for hardware in (TWO_A100, RTX_3060):
        mode = fleet.upgrade_mode(hardware, QWEN7["size"], QWEN14["size"], 1024, strategy=strategy)
        assert mode["mode"] == strategy
        assert "forced" in mode["reason"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "canary"}, "strategy must be one of auto, blue_green, in_place"),
        ({"overhead": 0.5}, "at least 1"),
    ],
)
def test_bad_mode_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(fleet.FleetError, match=message):
        fleet.upgrade_mode(CPU_HOST, 1, 1, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", ["lots", -1])
def test_bad_model_size(size: object) -> None:
    with pytest.raises(fleet.FleetError, match="model size"):
        fleet.upgrade_mode(CPU_HOST, size, 1)


# --- upgrade plan ---------------------------------------------------------------


def test_color_record_keeps_only_what_identifies_the_model() -> None:
    kept = record("b1", QWEN7)
    assert kept["model"] == {
        "name": "Qwen-7B",
        "path": QWEN7["path"],
        "sha256": "b" * 64,
        "size": QWEN7["size"],
    }
    assert kept["port"] == 8081


def test_up_to_date_host_changes_nothing() -> None:
    state = installed()
    plan = fleet.upgrade_plan(state, record("b1", QWEN7, 9999), COLORS)
    assert plan["changed"] is False
    assert plan["changes"] == []
    assert plan["state_after"] == state
    assert plan["summary"] == "up to date on blue"


def test_new_build_goes_to_the_idle_color() -> None:
    state = installed()
    plan = fleet.upgrade_plan(state, record("b2", QWEN7), COLORS, {"mode": "blue_green"})
    assert plan["changed"] is True
    assert plan["changes"] == ["engine"]
    assert (plan["from_color"], plan["to_color"]) == ("blue", "green")
    assert (plan["from_port"], plan["to_port"]) == (8081, 8082)
    assert plan["to"]["port"] == 8082
    after = plan["state_after"]
    assert after["active"] == "green"
    assert after["previous"] == "blue"
    assert after["colors"]["blue"] == state["colors"]["blue"]
    assert after["colors"]["green"]["build"] == "b2"
    assert plan["summary"] == "blue_green: blue -> green; engine b1 -> b2"


def test_new_model_and_build_from_green() -> None:
    state = installed("green", "blue")
    plan = fleet.upgrade_plan(state, record("b2", QWEN14), COLORS, {"mode": "in_place"})
    assert plan["changes"] == ["engine", "model"]
    assert plan["to_color"] == "blue"
    assert plan["mode"] == "in_place"
    assert plan["state_after"]["colors"]["blue"]["model"]["name"] == "Qwen-14B"
    assert plan["summary"] == "in_place: green -> blue; engine b1 -> b2, model Qwen-7B -> Qwen-14B"


def test_same_path_new_checksum_is_a_model_change() -> None:
    changed = dict(QWEN7, sha256="d" * 64)
    assert fleet.upgrade_plan(installed(), record("b1", changed), COLORS)["changes"] == ["model"]


def test_settings_change() -> None:
    plan = fleet.upgrade_plan(installed(), record("b1", QWEN7, args="--ctx-size 4096"), COLORS)
    assert plan["changes"] == ["settings"]
    assert plan["summary"].endswith("server settings")


def test_plan_without_an_install_says_what_to_run() -> None:
    with pytest.raises(fleet.FleetError, match=r"run site\.yml"):
        fleet.upgrade_plan({}, record("b1", QWEN7), COLORS)


def test_plan_rejects_an_unknown_mode() -> None:
    with pytest.raises(fleet.FleetError, match="unknown upgrade mode"):
        fleet.upgrade_plan(installed(), record("b2", QWEN7), COLORS, {"mode": "canary"})


DRAFT = {"name": "Qwen-0.5B", "path": "/data/models/Qwen-0.5B/q.gguf", "sha256": "f" * 64,
         "size": 512 * MIB, "artifact": "model-qwen-0.5b", "max_tokens": 16}  # fmt: skip


def test_a_color_with_a_draft_model_records_it_and_its_changes_are_named() -> None:
    spec = fleet.color_record("b1", QWEN7, "--ctx-size 2048 --spec-draft-model q.gguf", 8081, DRAFT)
    assert spec["draft"] == {
        "name": "Qwen-0.5B",
        "path": DRAFT["path"],
        "sha256": "f" * 64,
        "size": 512 * MIB,
    }
    assert "draft" not in record("b1", QWEN7)  # no key without one: older facts stay equal
    plan = fleet.upgrade_plan(installed(), spec, COLORS)
    assert plan["changes"] == ["draft", "settings"]
    assert plan["to"]["draft"] == spec["draft"]
    assert plan["summary"] == (
        "blue_green: blue -> green; draft model none -> Qwen-0.5B, server settings"
    )
    running = {"active": "green", "previous": "blue", "colors": {"green": {**spec, "port": 8082}}}
    new_draft = fleet.color_record("b1", QWEN7, spec["args"], 8081, {**DRAFT, "sha256": "0" * 64})
    assert fleet.upgrade_plan(running, new_draft, COLORS)["changes"] == ["draft"]
    assert fleet.upgrade_plan(running, spec, COLORS)["changed"] is False
    off = fleet.upgrade_plan(running, record("b1", QWEN7), COLORS)
    assert off["changes"] == ["draft", "settings"]
    assert "draft model Qwen-0.5B -> none" in off["summary"]


def test_prune_a_draft_model_no_color_uses_any_more() -> None:
    spec = fleet.color_record("b1", QWEN7, "--spec", 8081, DRAFT)
    before = {"active": "blue", "previous": "green",
              "colors": {"blue": record("b1", QWEN7), "green": {**spec, "port": 8082}}}  # fmt: skip
    # green (the previous version, with its draft model) takes the new version
    plan = fleet.upgrade_plan(before, record("b1", QWEN14), COLORS)
    assert fleet.prunable(before, plan["state_after"]) == {"builds": [], "models": [DRAFT["path"]]}
    # a draft that is the model of the other color stays
    self_draft = fleet.color_record("b1", QWEN14, "--spec", 8081, QWEN7)
    plan = fleet.upgrade_plan(before, self_draft, COLORS)
    assert fleet.prunable(before, plan["state_after"])["models"] == [DRAFT["path"]]
    kept = fleet.upgrade_plan(before, fleet.color_record("b1", QWEN14, "x", 1, DRAFT), COLORS)
    assert fleet.prunable(before, kept["state_after"])["models"] == []


# --- rollback -------------------------------------------------------------------


def test_rollback_goes_back_to_the_previous_color() -> None:
    state = installed("green", "blue")
    target = fleet.rollback_target(state, COLORS)
    assert target["changed"] is True
    assert (target["from_color"], target["to_color"]) == ("green", "blue")
    assert (target["from_port"], target["to_port"]) == (8082, 8081)
    assert target["to"]["build"] == "b0"
    after = target["state_after"]
    assert after == {"active": "blue", "previous": "", "colors": state["colors"]}
    assert "engine b0, model SmolLM2" in target["reason"]


def test_second_rollback_changes_nothing() -> None:
    first = fleet.rollback_target(installed("green", "blue"), COLORS)
    second = fleet.rollback_target(first["state_after"], COLORS)
    assert second["changed"] is False
    assert "no previous version" in second["reason"]


def test_rollback_on_a_first_install_or_no_fact() -> None:
    assert fleet.rollback_target(installed(), COLORS)["changed"] is False
    assert fleet.rollback_target(None, COLORS)["changed"] is False
    assert "nothing was installed" in fleet.rollback_target({}, COLORS)["reason"]


@pytest.mark.parametrize("previous", ["red", "green"])
def test_rollback_to_an_unusable_color_changes_nothing(previous: str) -> None:
    state = {
        "active": "green",
        "previous": previous,
        "colors": {"green": record("b1", QWEN7, 8082)},
    }
    target = fleet.rollback_target(state, COLORS)
    assert target["changed"] is False
    assert "not usable" in target["reason"]


def test_upgrade_then_rollback_restores_the_state_but_previous() -> None:
    state = installed("blue", "green")
    plan = fleet.upgrade_plan(state, record("b2", QWEN14), COLORS)
    back = fleet.rollback_target(plan["state_after"], COLORS)
    assert back["to_color"] == "blue"
    assert back["state_after"]["colors"]["blue"] == state["colors"]["blue"]
    assert back["state_after"]["previous"] == ""


# --- pruning --------------------------------------------------------------------


def test_prune_what_no_color_uses_any_more() -> None:
    before = installed("blue", "green")  # blue: b1 + Qwen-7B, green: b0 + SmolLM2
    plan = fleet.upgrade_plan(before, record("b2", QWEN7), COLORS)
    assert fleet.prunable(before, plan["state_after"]) == {
        "builds": ["b0"],
        "models": [SMOL["path"]],
    }


def test_prune_keeps_what_the_other_color_shares() -> None:
    before = installed("blue", "green")
    # green gets SmolLM2 again, on the build blue runs: b0 goes, the model stays.
    plan = fleet.upgrade_plan(before, record("b1", SMOL, args="--ctx-size 1024"), COLORS)
    assert fleet.prunable(before, plan["state_after"]) == {"builds": ["b0"], "models": []}


def test_prune_nothing_on_first_upgrade_or_rollback() -> None:
    before = installed()
    plan = fleet.upgrade_plan(before, record("b2", QWEN14), COLORS)
    assert fleet.prunable(before, plan["state_after"]) == {"builds": [], "models": []}
    back = fleet.rollback_target(plan["state_after"], COLORS)
    assert fleet.prunable(plan["state_after"], back["state_after"]) == {"builds": [], "models": []}
    assert fleet.prunable(None, None) == {"builds": [], "models": []}


def test_filters_are_registered() -> None:
    names = fleet.FilterModule().filters()
    assert {"llmfleet_upgrade_mode", "llmfleet_upgrade_plan", "llmfleet_rollback_target"} <= set(
        names
    )
