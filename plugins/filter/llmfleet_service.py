"""config.yaml for the inference service, and llama-server's flags derived from it.

config.yaml is the single source of truth for the running server: the systemd
unit's command line is rendered from the same dictionary, so the two cannot
disagree. Pure functions; tests in tests/unit/test_service_config.py.
"""

from __future__ import annotations

from typing import Any

#: Requests decoded together when the inventory does not say (the tuner may choose
#: otherwise): enough that a few clients arriving together do not queue behind each other,
#: more where the GPUs have room for them.
SLOTS_BY_TIER = {"cpu": 4, "base": 4, "standard": 8, "pro": 8, "enterprise": 16}
FLASH_ATTENTION = ("auto", "on", "off")
#: llama-server's speculative decoding with a separate draft model (``--spec-type``): with
#: only ``--spec-draft-model`` this llama.cpp loads the draft and never drafts with it.
SPEC_TYPE = "draft-simple"
_FALSE = ("false", "no", "off", "0", "")


def _flag(value: object) -> bool:
    """A switch from the inventory: a bool, or its text ('false', 'no', 'off', '0' are off)."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE
    return bool(value)


def speculative_config(
    model: dict[str, Any], settings: dict[str, Any], gpu_layers: int
) -> dict[str, Any] | None:
    """Speculative decoding as the color runs it: None when the model has no draft model or
    the settings turn it off (``speculative: false``), else the draft (name, path, sha256,
    artifact), its numbers and where its layers go (those of the model)."""
    draft = model.get("draft")
    if not draft or not _flag(settings.get("speculative", True)):
        return None
    numbers = {}
    for key, kind, low, high in (
        ("max_tokens", int, 1, 256),
        ("min_tokens", int, 0, 256),
        ("p_min", float, 0.0, 1.0),
    ):
        try:
            numbers[key] = kind(draft[key])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"the draft model's {key} is {draft.get(key)!r}") from None
        if not low <= numbers[key] <= high:
            raise ValueError(f"the draft model's {key} is {numbers[key]}; allowed: {low} to {high}")
    if numbers["min_tokens"] > numbers["max_tokens"]:
        raise ValueError(
            f"the draft model's min_tokens {numbers['min_tokens']} is more than its "
            f"max_tokens {numbers['max_tokens']}"
        )
    return {
        "type": SPEC_TYPE,
        "draft": {key: draft.get(key) for key in ("name", "path", "sha256", "artifact")},
        **numbers,
        "n_gpu_layers": gpu_layers,
    }


def _count(value: Any, fallback: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return fallback
    return number if number > 0 else fallback


def serving_config(
    hardware: dict[str, Any],
    model: dict[str, Any],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The server's configuration from the facts, the model and the inventory's settings."""
    gpus = hardware.get("gpus") or [] if hardware.get("driver_loaded") else []
    headroom = int(settings.get("vram_headroom_mib", 1024))
    context = settings.get("context_length") or min(
        int(model["context_length"]), int(settings.get("context_cap", 8192))
    )
    if gpus:
        usable = [max(int(g.get("usable_vram_mib") or 0) - headroom, 0) for g in gpus]
        device_map = [f"cuda:{g['index']}" for g in gpus]
        max_memory = {f"cuda:{g['index']}": f"{u}MiB" for g, u in zip(gpus, usable, strict=True)}
        total = sum(usable) or 1
        tensor_split = [round(u / total, 4) for u in usable]
        gpu_layers = 999
    else:
        ram = int(hardware.get("memory_total_mib") or 0)
        device_map = ["cpu"]
        max_memory = {"cpu": f"{max(ram - headroom, 0)}MiB"}
        tensor_split = []
        gpu_layers = 0
    threads = _count(settings.get("threads"), 2)
    slots = settings.get("parallel_slots") or SLOTS_BY_TIER.get(str(model.get("tier")), 4)
    flash = str(settings.get("flash_attention") or "auto")
    if flash not in FLASH_ATTENTION:
        raise ValueError(f"flash_attention is {flash!r}; allowed: {', '.join(FLASH_ATTENTION)}")
    return {
        "model": {"name": model["name"], "path": model["path"], "tier": model.get("tier")},
        "device_map": device_map,
        "max_memory": max_memory,
        "precision": settings.get("precision", "f16"),
        "tensor_parallel_degree": max(len(gpus), 1),
        "tensor_split": tensor_split,
        "n_gpu_layers": gpu_layers,
        "batch_size": int(settings.get("batch_size") or 2048),
        "ubatch_size": int(settings.get("ubatch_size") or 512),
        "parallel_slots": int(slots),
        "kv_unified": bool(settings.get("kv_unified", True)),
        "flash_attention": flash,
        "context_length": int(context),
        "threads": threads,
        "threads_batch": _count(settings.get("threads_batch"), threads),
        "numa": "distribute" if _count(settings.get("numa_nodes"), 1) > 1 else None,
        "bind_address": settings.get("bind_address", "127.0.0.1"),
        "port": int(settings.get("port", 8080)),
        "metrics": True,
        "speculative": speculative_config(model, settings, gpu_layers),
    }


def llama_server_args(
    config: dict[str, Any], api_key_file: str = "", model_path: str = "", listen: bool = True
) -> list[str]:
    """llama-server's command line for `config`.

    The model is ``model_path`` when given, else ``${MODEL_PATH}`` for systemd to expand.
    ``listen=False`` leaves out ``--host`` and ``--port`` (a template unit sets them per color).
    """
    address = ["--host", config["bind_address"], "--port", str(config["port"])] if listen else []
    args = [
        "--model", model_path or "${MODEL_PATH}",
        "--alias", config["model"]["name"],
        *address,
        "--ctx-size", str(config["context_length"]),
        "--parallel", str(config["parallel_slots"]),
        "--kv-unified" if config.get("kv_unified", True) else "--no-kv-unified",
        "--batch-size", str(config["batch_size"]),
        "--ubatch-size", str(config.get("ubatch_size", 512)),
        "--threads", str(config["threads"]),
        "--threads-batch", str(config.get("threads_batch", config["threads"])),
        "--flash-attn", str(config.get("flash_attention", "auto")),
        "--n-gpu-layers", str(config["n_gpu_layers"]),
        "--cache-type-k", config["precision"],
        "--cache-type-v", config["precision"],
    ]  # fmt: skip
    if len(config["tensor_split"]) > 1:
        args += [
            "--split-mode",
            "layer",
            "--tensor-split",
            ",".join(map(str, config["tensor_split"])),
        ]
    speculative = config.get("speculative")
    if speculative:
        args += [
            "--spec-type", speculative["type"],
            "--spec-draft-model", speculative["draft"]["path"],
            "--spec-draft-n-max", str(speculative["max_tokens"]),
            "--spec-draft-n-min", str(speculative["min_tokens"]),
            "--spec-draft-p-min", f"{float(speculative['p_min']):g}",
        ]  # fmt: skip
        if speculative["n_gpu_layers"]:  # on the CPU the engine ignores it, with a warning
            args += ["--spec-draft-ngl", str(speculative["n_gpu_layers"])]
    if config.get("numa"):
        args += ["--numa", str(config["numa"])]
    if config.get("metrics"):
        args.append("--metrics")
    if api_key_file:
        args += ["--api-key-file", api_key_file]
    return args


class FilterModule:
    """llmfleet inference service filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "llmfleet_serving_config": serving_config,
            "llmfleet_llama_server_args": llama_server_args,
        }
