"""The engine's build plan: variant, CUDA architectures and cmake flags from the facts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import load_module_file

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "llmfleet_engine.py"
engine = load_module_file("llmfleet_engine_filters", PLUGIN)

A100_AND_3060 = {
    "gpus": [
        {"index": 0, "name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"},
        {"index": 1, "name": "NVIDIA GeForce RTX 3060", "compute_capability": "8.6"},
    ]
}
NO_GPU = {"gpus": []}


def test_cpu_host_builds_without_cuda() -> None:
    plan = engine.engine_plan(NO_GPU, version="0.3.36")
    assert plan["variant"] == "cpu"
    assert "-DGGML_CUDA=OFF" in plan["cmake_args"]
    assert "-DLLAMA_OPENSSL=OFF" in plan["cmake_args"]
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in plan["cmake_args"]
    assert plan["build_id"].startswith("0.3.36-cpu-x86_64-")


def test_gpu_host_with_nvcc_builds_cuda_for_its_architectures() -> None:
    plan = engine.engine_plan(A100_AND_3060, nvcc_present=True, version="0.3.36")
    assert plan["variant"] == "cuda"
    assert plan["cuda_architectures"] == "80;86"
    assert "-DGGML_CUDA=ON" in plan["cmake_args"]
    assert "-DCMAKE_CUDA_ARCHITECTURES=80;86" in plan["cmake_args"]
    assert "-DCMAKE_CUDA_COMPILER=/usr/bin/nvcc" in plan["cmake_args"]
    assert plan["build_id"].startswith("0.3.36-cuda80-86-x86_64-")


def test_the_toolkits_host_compiler_goes_to_cmake_and_makes_another_build() -> None:
    wrapper = "/usr/lib/nvidia-cuda-toolkit/bin/g++"
    plain = engine.engine_plan(A100_AND_3060, nvcc_present=True, version="0.3.36")
    debian = engine.engine_plan(
        A100_AND_3060, nvcc_present=True, version="0.3.36", host_compiler=wrapper
    )
    assert f"-DCMAKE_CUDA_HOST_COMPILER={wrapper}" in debian["cmake_args"]
    assert not any("CMAKE_CUDA_HOST_COMPILER" in arg for arg in plain["cmake_args"])
    assert debian["build_id"] != plain["build_id"]
    cpu = engine.engine_plan(NO_GPU, version="0.3.36", host_compiler=wrapper)
    assert cpu == engine.engine_plan(NO_GPU, version="0.3.36")  # a CPU build has no nvcc


def test_gpu_host_without_nvcc_builds_for_the_cpu() -> None:
    assert engine.engine_plan(A100_AND_3060, nvcc_present=False)["variant"] == "cpu"


def test_architectures_set_in_the_inventory_win() -> None:
    plan = engine.engine_plan(A100_AND_3060, nvcc_present=True, architectures="90")
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in plan["cmake_args"]


def test_missing_compute_capability_names_the_variable() -> None:
    gpus = {"gpus": [{"index": 0, "name": "Tesla T4", "compute_capability": None}]}
    with pytest.raises(engine.PlanError, match="set inference_engine_cuda_architectures"):
        engine.engine_plan(gpus, nvcc_present=True)


def test_cuda_without_nvcc_and_unknown_variants_fail() -> None:
    with pytest.raises(engine.PlanError, match="nvcc is missing"):
        engine.engine_plan(A100_AND_3060, variant="cuda", nvcc_present=False)
    with pytest.raises(engine.PlanError, match="allowed: auto, cpu, cuda"):
        engine.engine_plan(NO_GPU, variant="rocm")


def test_other_flags_make_another_build() -> None:
    plain = engine.engine_plan(NO_GPU, version="0.3.36")
    tuned = engine.engine_plan(NO_GPU, version="0.3.36", extra_args=["-DGGML_AVX512=ON"])
    assert plain["build_id"] != tuned["build_id"]
    assert plain == engine.engine_plan(NO_GPU, version="0.3.36")


def test_a_build_holds_the_server_the_quantizer_and_the_benchmarks() -> None:
    plan = engine.engine_plan({}, version="0.3.36")
    assert plan["targets"] == [
        "llama-server",
        "llama-quantize",
        "llama-bench",
        "llama-batched-bench",
    ]
    fewer = hashlib.sha256(
        "\n".join(
            ["0.3.36", "x86_64", *plan["cmake_args"], "llama-server", "llama-quantize"]
        ).encode()
    ).hexdigest()
    assert plan["fingerprint"] != fewer  # the targets are part of what makes a build id
