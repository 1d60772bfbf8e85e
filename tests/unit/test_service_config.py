"""config.yaml of the inference service and the llama-server flags derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_module_file

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "llmfleet_service.py"
service = load_module_file("llmfleet_service_filters", PLUGIN)

MODEL = {"name": "SmolLM2-135M-Instruct", "path": "/data/models/s/s.gguf", "context_length": 8192}
SETTINGS = {
    "vram_headroom_mib": 1024,
    "context_cap": 4096,
    "batch_size": 256,
    "parallel_slots": 2,
    "threads": 2,
    "bind_address": "0.0.0.0",
    "port": 8080,
}


def test_cpu_host() -> None:
    hardware = {"driver_loaded": False, "gpus": [], "memory_total_mib": 24105}
    config = service.serving_config(hardware, MODEL, SETTINGS)
    assert config["device_map"] == ["cpu"]
    assert config["max_memory"] == {"cpu": "23081MiB"}
    assert config["tensor_parallel_degree"] == 1
    assert config["n_gpu_layers"] == 0
    assert config["context_length"] == 4096
    args = service.llama_server_args(config, "/etc/llmfleet/api-key")
    assert args[:2] == ["--model", "${MODEL_PATH}"]
    assert "--metrics" in args
    assert args[-2:] == ["--api-key-file", "/etc/llmfleet/api-key"]
    assert "--tensor-split" not in args


def test_two_gpu_host_splits_by_vram_minus_headroom() -> None:
    hardware = {
        "driver_loaded": True,
        "memory_total_mib": 262144,
        "gpus": [
            {"index": 0, "usable_vram_mib": 24564},
            {"index": 1, "usable_vram_mib": 12288},
        ],
    }
    config = service.serving_config(hardware, MODEL, {**SETTINGS, "context_length": 2048})
    assert config["device_map"] == ["cuda:0", "cuda:1"]
    assert config["max_memory"] == {"cuda:0": "23540MiB", "cuda:1": "11264MiB"}
    assert config["tensor_parallel_degree"] == 2
    assert config["n_gpu_layers"] == 999
    assert config["context_length"] == 2048
    args = service.llama_server_args(config)
    assert args[args.index("--tensor-split") + 1] == "0.6764,0.3236"
    assert "--api-key-file" not in args


def test_gpus_without_a_loaded_driver_serve_on_the_cpu() -> None:
    hardware = {
        "driver_loaded": False,
        "memory_total_mib": 4096,
        "gpus": [{"index": 0, "usable_vram_mib": None}],
    }
    assert service.serving_config(hardware, MODEL, SETTINGS)["device_map"] == ["cpu"]


def test_color_args_carry_the_model_path_and_no_address() -> None:
    hardware = {"driver_loaded": False, "gpus": [], "memory_total_mib": 24105}
    config = service.serving_config(hardware, MODEL, SETTINGS)
    args = service.llama_server_args(config, "/etc/llmfleet/api-key", MODEL["path"], listen=False)
    assert args[:2] == ["--model", "/data/models/s/s.gguf"]
    assert "--host" not in args
    assert "--port" not in args
    assert "--metrics" in args


def test_defaults_without_tuning() -> None:
    """Physical cores decode, every CPU takes prompts, one KV buffer, llama.cpp's batch, and the
    slots of the tier; --numa distribute only on a host with more than one NUMA node."""
    hardware = {"driver_loaded": False, "gpus": [], "memory_total_mib": 24105}
    model = {**MODEL, "tier": "cpu"}
    config = service.serving_config(hardware, model, {"threads": 8, "threads_batch": 16})
    assert (config["threads"], config["threads_batch"]) == (8, 16)
    assert (config["batch_size"], config["ubatch_size"]) == (2048, 512)
    assert config["parallel_slots"] == 4
    assert config["kv_unified"] is True
    assert config["numa"] is None
    args = service.llama_server_args(config)
    for flag, value in [
        ("--threads", "8"),
        ("--threads-batch", "16"),
        ("--parallel", "4"),
        ("--batch-size", "2048"),
        ("--ubatch-size", "512"),
        ("--flash-attn", "auto"),
    ]:
        assert args[args.index(flag) + 1] == value
    assert "--kv-unified" in args
    assert "--numa" not in args
    standard = service.serving_config(hardware, {**MODEL, "tier": "standard"}, {"numa_nodes": 2})
    assert standard["parallel_slots"] == 8
    numa_args = service.llama_server_args(standard)
    assert numa_args[numa_args.index("--numa") + 1] == "distribute"


def test_a_bad_flash_attention_value_is_named() -> None:
    hardware = {"driver_loaded": False, "gpus": [], "memory_total_mib": 1024}
    with pytest.raises(ValueError, match="flash_attention is 'yes'; allowed: auto, on, off"):
        service.serving_config(hardware, MODEL, {"flash_attention": "yes"})


DRAFT = {
    "name": "SmolLM2-135M-Instruct-draft",
    "path": "/data/models/d/d.gguf",
    "sha256": "e" * 64,
    "artifact": "model-draft",
    "size": 98362432,
    "max_tokens": 16,
    "min_tokens": 2,
    "p_min": 0.75,
}


def test_a_model_with_a_draft_serves_with_speculative_decoding_on_the_cpu() -> None:
    hardware = {"driver_loaded": False, "gpus": [], "memory_total_mib": 24105}
    config = service.serving_config(hardware, {**MODEL, "draft": DRAFT}, SETTINGS)
    assert config["speculative"] == {
        "type": "draft-simple",
        "draft": {
            "name": "SmolLM2-135M-Instruct-draft",
            "path": "/data/models/d/d.gguf",
            "sha256": "e" * 64,
            "artifact": "model-draft",
        },
        "max_tokens": 16,
        "min_tokens": 2,
        "p_min": 0.75,
        "n_gpu_layers": 0,
    }
    args = service.llama_server_args(config, "", MODEL["path"], listen=False)
    start = args.index("--spec-type")
    assert args[start : start + 10] == [
        "--spec-type", "draft-simple",
        "--spec-draft-model", "/data/models/d/d.gguf",
        "--spec-draft-n-max", "16",
        "--spec-draft-n-min", "2",
        "--spec-draft-p-min", "0.75",
    ]  # fmt: skip
    assert "--spec-draft-ngl" not in args  # the engine ignores it on the CPU, with a warning


def test_on_gpus_the_draft_goes_where_the_model_goes() -> None:
    hardware = {
        "driver_loaded": True,
        "memory_total_mib": 65536,
        "gpus": [{"index": 0, "usable_vram_mib": 12288}],
    }
    config = service.serving_config(hardware, {**MODEL, "draft": {**DRAFT, "p_min": 1}}, SETTINGS)
    assert config["speculative"]["n_gpu_layers"] == 999
    args = service.llama_server_args(config)
    assert args[args.index("--spec-draft-ngl") + 1] == "999"
    assert args[args.index("--spec-draft-p-min") + 1] == "1"


@pytest.mark.parametrize("off", [False, "false", "False", "no", "0"])
def test_speculative_decoding_off_on_a_host_or_for_a_model_without_a_draft(off: object) -> None:
    hardware = {"driver_loaded": False, "gpus": [], "memory_total_mib": 24105}
    config = service.serving_config(
        hardware, {**MODEL, "draft": DRAFT}, {**SETTINGS, "speculative": off}
    )
    assert config["speculative"] is None
    assert not any(arg.startswith("--spec") for arg in service.llama_server_args(config))
    for model in (MODEL, {**MODEL, "draft": None}):
        assert service.serving_config(hardware, model, SETTINGS)["speculative"] is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_tokens": 0}, "max_tokens is 0; allowed: 1 to 256"),
        ({"p_min": 1.5}, "p_min is 1.5; allowed: 0.0 to 1.0"),
        ({"min_tokens": 17}, "min_tokens 17 is more than its max_tokens 16"),
        ({"max_tokens": "many"}, "max_tokens is 'many'"),
    ],
)
def test_bad_draft_numbers_are_named(changes: dict[str, object], message: str) -> None:
    hardware = {"driver_loaded": False, "gpus": [], "memory_total_mib": 1024}
    with pytest.raises(ValueError, match=message):
        service.serving_config(hardware, {**MODEL, "draft": {**DRAFT, **changes}}, SETTINGS)
