"""The hardware_eval role's CUDA program, compiled with the host's C++ compiler against a stub
CUDA runtime, and its JSON read by the filter plugin.

No GPU and no nvcc here: the program only calls the CUDA runtime API from host code (copies,
events, peer access; no kernel), so g++ compiles it when ``cuda_runtime.h`` is the stub below.
The stub keeps a virtual clock that each copy advances by bytes / a fixed rate per direction,
so the rates the program computes from its events are known: what is asserted is the
program's arithmetic, its JSON and its error path. Whether the real nvcc 11.8 compiles it is
molecule/gpu_stack's business (verify_evaluation.yml). Skipped without g++.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import load_module_file

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "roles" / "hardware_eval" / "files" / "llmfleet-gpu-bandwidth.cu"
PLUGIN = REPO / "plugins" / "filter" / "llmfleet_evaluation.py"
evaluation = load_module_file("llmfleet_evaluation_filters", PLUGIN)

GIB = 1024**3
#: The stub's rates, GiB/s: what each copy advances the virtual clock by.
H2D, D2H, D2D_COPY, PEER = 22.0, 23.0, 450.0, 45.0

STUB = r"""
// A stub of the CUDA runtime for tests: STUB_GPUS devices (0: cudaGetDeviceCount fails as
// on a host whose GPU does not answer), STUB_PEER=1 for peer access, a virtual clock.
#pragma once
#include <cstdlib>
#include <cstdio>
#include <cstring>
typedef enum cudaError {
  cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2,
  cudaErrorInsufficientDriver = 35, cudaErrorNoDevice = 100,
  cudaErrorPeerAccessAlreadyEnabled = 704
} cudaError_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
                      cudaMemcpyDeviceToDevice = 3 };
enum cudaDeviceAttr { cudaDevAttrMemoryClockRate = 36, cudaDevAttrGlobalMemoryBusWidth = 37,
                      cudaDevAttrL2CacheSize = 38 };
#define cudaStreamNonBlocking 0x01
typedef struct { char bytes[16]; } cudaUUID_t;
struct cudaDeviceProp { char name[256]; cudaUUID_t uuid; };
typedef struct stub_stream *cudaStream_t;
typedef struct stub_event { double at; } *cudaEvent_t;
static double stub_clock = 0.0;
static cudaError_t stub_last = cudaSuccess;
static int stub_gpus() { const char *v = getenv("STUB_GPUS"); return v ? atoi(v) : 1; }
static cudaError_t stub_fail_at(const char *name) {
  const char *v = getenv("STUB_FAIL");
  return (v && !strcmp(v, name)) ? cudaErrorMemoryAllocation : cudaSuccess;
}
inline const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorMemoryAllocation: return "out of memory";
    default: return "stub error";
  }
}
inline const char *cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    default: return "cudaErrorStub";
  }
}
inline cudaError_t cudaGetLastError() {
  cudaError_t e = stub_last; stub_last = cudaSuccess; return e;
}
inline cudaError_t cudaRuntimeGetVersion(int *v) { *v = 11080; return cudaSuccess; }
inline cudaError_t cudaDriverGetVersion(int *v) { *v = 12020; return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int *n) {
  *n = stub_gpus(); return *n > 0 ? cudaSuccess : (*n = 0, cudaErrorNoDevice);
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
  memset(p, 0, sizeof *p); snprintf(p->name, sizeof p->name, "Stub \"GPU\" %d", d);
  for (int i = 0; i < 16; ++i) p->uuid.bytes[i] = (char)(0x10 * d + i);
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetPCIBusId(char *id, int len, int d) {
  snprintf(id, len, "0000:%02X:00.0", 0x41 + d); return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMemoryClockRate ? 9751000
       : a == cudaDevAttrGlobalMemoryBusWidth ? 384 : 6291456;
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) {
  *s = nullptr; return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaMallocHost(void **p, size_t n) {
  *p = malloc(n); return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFreeHost(void *p) { free(p); return cudaSuccess; }
inline cudaError_t cudaMalloc(void **p, size_t) {
  static char device_memory[64]; *p = device_memory; return stub_fail_at("cudaMalloc");
}
inline cudaError_t cudaFree(void *) { return cudaSuccess; }
inline cudaError_t cudaMemset(void *, int, size_t) { return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void *, const void *, size_t n, cudaMemcpyKind k, cudaStream_t) {
  const double rate = k == cudaMemcpyHostToDevice ? STUB_H2D
                      : k == cudaMemcpyDeviceToHost ? STUB_D2H : STUB_D2D;
  stub_clock += n / (rate * 1073741824.0); return cudaSuccess;
}
inline cudaError_t cudaMemcpyPeerAsync(void *, int, const void *, int, size_t n, cudaStream_t) {
  stub_clock += n / (STUB_PEER_RATE * 1073741824.0); return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t *e) {
  *e = new stub_event{0.0}; return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->at = stub_clock; return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = (float)((b->at - a->at) * 1000.0); return cudaSuccess;
}
inline cudaError_t cudaDeviceCanAccessPeer(int *can, int, int) {
  const char *v = getenv("STUB_PEER"); *can = v && !strcmp(v, "1"); return cudaSuccess;
}
inline cudaError_t cudaDeviceEnablePeerAccess(int, unsigned) {
  static int calls = 0;
  // the second enable of a pair is "already enabled", as on a real host
  if (++calls % 2 == 0) {
    stub_last = cudaErrorPeerAccessAlreadyEnabled;
    return cudaErrorPeerAccessAlreadyEnabled;
  }
  return cudaSuccess;
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ to compile the CUDA program against the stub runtime")
    folder = tmp_path_factory.mktemp("cuda")
    rates = {"STUB_H2D": H2D, "STUB_D2H": D2H, "STUB_D2D": D2D_COPY, "STUB_PEER_RATE": PEER}
    header = "".join(f"#define {name} {value}\n" for name, value in rates.items()) + STUB
    (folder / "cuda_runtime.h").write_text(header)
    binary = folder / "llmfleet-gpu-bandwidth"
    build = subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-x",
            "c++",
            "-I",
            str(folder),
            "-o",
            str(binary),
            str(SOURCE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    return binary


def run(program: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def test_one_gpu_rates_and_json(program: Path) -> None:
    result = run(program, "--sizes-mib", "1,4", "--iterations", "5", STUB_GPUS="1")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["program"] == "llmfleet-gpu-bandwidth"
    assert (document["cuda_runtime"], document["iterations"], document["p2p"]) == (11080, 5, [])
    (device,) = document["devices"]
    assert device["name"] == 'Stub "GPU" 0'  # a quote in a name stays JSON
    assert device["uuid"] == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert device["pci_bus_id"] == "0000:41:00.0"
    assert [r["bytes"] for r in device["h2d"]] == [1 << 20, 4 << 20]
    assert [r["gib_per_s"] for r in device["h2d"]] == [pytest.approx(H2D, abs=0.01)] * 2
    assert [r["gib_per_s"] for r in device["d2h"]] == [pytest.approx(D2H, abs=0.01)] * 2
    # a device-to-device copy reads and writes every byte: twice the copy rate
    assert [r["gib_per_s"] for r in device["d2d"]] == [pytest.approx(2 * D2D_COPY, abs=0.5)] * 2
    # 2 x 9751 MHz x 384 bits / 8 = 936 GB/s = 871.8 GiB/s (an RTX 3090's)
    assert device["memory_theoretical_gib_per_s"] == pytest.approx(871.8, abs=0.1)
    assert device["l2_cache_bytes"] == 6291456


def test_peers_are_measured_where_peer_access_is_allowed(program: Path) -> None:
    with_peer = json.loads(run(program, "--sizes-mib", "2", STUB_GPUS="2", STUB_PEER="1").stdout)
    assert [(p["from"], p["to"], p["peer_access"]) for p in with_peer["p2p"]] == [
        (0, 1, True),
        (1, 0, True),
    ]
    assert [p["gib_per_s"] for p in with_peer["p2p"]] == [pytest.approx(PEER, abs=0.01)] * 2
    without = json.loads(run(program, "--sizes-mib", "2", STUB_GPUS="2", STUB_PEER="0").stdout)
    assert without["p2p"] == [
        {"from": 0, "to": 1, "peer_access": False, "gib_per_s": None},
        {"from": 1, "to": 0, "peer_access": False, "gib_per_s": None},
    ]
    assert evaluation.peer_gaps(without) == [(0, 1), (1, 0)]


def test_no_device_is_one_json_error_and_exit_1(program: Path) -> None:
    result = run(program, STUB_GPUS="0")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "program": "llmfleet-gpu-bandwidth",
        "version": 1,
        "error": "cudaGetDeviceCount(&count): no CUDA-capable device is detected "
        "(cudaErrorNoDevice)",
    }
    parsed = evaluation.parse_cuda_program(result.stdout)
    assert parsed == {"error": json.loads(result.stdout)["error"]}


def test_a_failing_call_mid_run_names_itself(program: Path) -> None:
    result = run(program, "--sizes-mib", "1", STUB_GPUS="1", STUB_FAIL="cudaMalloc")
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == (
        "cudaMalloc(&dev_a, bytes): out of memory (cudaErrorMemoryAllocation)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes-mib", "0"], "--sizes-mib: '0' is not a size from 1 to 65536 MiB"),
        (["--sizes-mib", "1,,2"], "--sizes-mib: '' is not a size from 1 to 65536 MiB"),
        (["--iterations", "0"], "--iterations: not from 1 to 10000"),
        (
            ["--bogus"],
            "unknown argument '--bogus' (usage: --sizes-mib 1,16,64,256 --iterations 10)",
        ),
    ],
)
def test_bad_arguments_are_json_errors(program: Path, args: list[str], message: str) -> None:
    result = run(program, *args)
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == message


def test_the_document_takes_the_programs_output(program: Path) -> None:
    """Two GPUs in the facts, matched by bus id, through the whole document."""
    stdout = run(program, "--sizes-mib", "1,4", STUB_GPUS="2", STUB_PEER="1").stdout
    hardware = {
        "gpu_count": 2,
        "driver_loaded": True,
        "gpus": [
            {
                "index": i,
                "name": 'Stub "GPU"',
                "uuid": f"GPU-{i}",
                "pci_bus_id": f"0000:4{i + 1}:00.0",
                "pcie_gen_max": 4,
                "pcie_gen_current": 4,
                "pcie_width_max": 16,
                "pcie_width_current": 16,
            }
            for i in range(2)
        ],
    }
    gpus, p2p, extra = evaluation.gpus_result(hardware, evaluation.parse_cuda_program(stdout), None)
    assert [g["pcie"]["h2d_gib_per_s"] for g in gpus] == [pytest.approx(H2D, abs=0.01)] * 2
    assert [g["memory_bandwidth_gib_per_s"] for g in gpus] == [pytest.approx(900, abs=0.5)] * 2
    assert [(p["from"], p["to"]) for p in p2p] == [(0, 1), (1, 0)]
    assert extra[1]["memory_theoretical_gib_per_s"] == pytest.approx(871.8, abs=0.1)
