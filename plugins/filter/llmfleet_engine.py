"""The inference engine's build plan from the facts: variant, CUDA architectures,
cmake arguments and the build id. Pure functions; tests in tests/unit/test_engine_plan.py.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: Always: a release build of the server and the quantizer only, static, with no
#: network code (no HTTPS model download, no web UI fetched at build time).
BASE_CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DGGML_NATIVE=OFF",
    "-DCMAKE_C_COMPILER_LAUNCHER=ccache",
    "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache",
)


#: What a build holds: the server, the quantizer (a new model version from an old one, on
#: the host), and llama.cpp's own benchmarks (the decode and prefill ceilings, the
#: batched-decode curve), so every host can measure its engine without any download.
TARGETS = ("llama-server", "llama-quantize", "llama-bench", "llama-batched-bench")


class PlanError(ValueError):
    """The plan cannot be made; the message names the variable to set."""


def cuda_architectures(gpus: list[dict[str, Any]]) -> str:
    """ "8.6" and "8.0" → "80;86": CMAKE_CUDA_ARCHITECTURES from the GPUs' compute capability."""
    archs = set()
    for gpu in gpus:
        capability = gpu.get("compute_capability")
        if not capability:
            raise PlanError(
                f"GPU {gpu.get('index')} ({gpu.get('name')}) has no compute capability in the "
                "facts (its driver does not report it): set inference_engine_cuda_architectures"
            )
        major, _, minor = str(capability).partition(".")
        archs.add(int(major) * 10 + int(minor or 0))
    return ";".join(str(arch) for arch in sorted(archs))


def engine_plan(
    hardware: dict[str, Any],
    variant: str = "auto",
    nvcc_present: bool = False,
    nvcc: str = "/usr/bin/nvcc",
    architectures: str = "",
    host_compiler: str = "",
    extra_args: list[str] | None = None,
    version: str = "",
    machine: str = "x86_64",
) -> dict[str, Any]:
    """What to build: {variant, cuda_architectures, cmake_args, targets, fingerprint, build_id}."""
    gpus = hardware.get("gpus") or []
    if variant == "auto":
        variant = "cuda" if gpus and nvcc_present else "cpu"
    if variant not in ("cpu", "cuda"):
        raise PlanError(f"inference_engine_variant is {variant!r}; allowed: auto, cpu, cuda")
    args = list(BASE_CMAKE_ARGS)
    archs = ""
    if variant == "cuda":
        if not nvcc_present:
            raise PlanError(f"inference_engine_variant is cuda but {nvcc} is missing")
        archs = architectures or cuda_architectures(gpus)
        args += [
            "-DGGML_CUDA=ON",
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            f"-DCMAKE_CUDA_ARCHITECTURES={archs}",
        ]
        if host_compiler:
            args.append(f"-DCMAKE_CUDA_HOST_COMPILER={host_compiler}")
    else:
        args += ["-DGGML_CUDA=OFF"]
    args += list(extra_args or [])
    fingerprint = hashlib.sha256(
        "\n".join([version, machine, *args, *TARGETS]).encode()
    ).hexdigest()
    label = variant if variant == "cpu" else "cuda" + archs.replace(";", "-")
    return {
        "variant": variant,
        "cuda_architectures": archs,
        "cmake_args": args,
        "targets": list(TARGETS),
        "fingerprint": fingerprint,
        "build_id": f"{version}-{label}-{machine}-{fingerprint[:8]}",
    }


class FilterModule:
    """llmfleet engine filters."""

    def filters(self) -> dict[str, Any]:
        return {"llmfleet_engine_plan": engine_plan}
