"""roles/node_metrics/files/llmfleet-engine.mtail, run by the real mtail (Debian 12's 3.0.0~rc50).

The binary comes from scripts/debian-tool.sh (apt-get download + dpkg-deb -x into the cache, never
installed). The log fed to mtail is built from llama.cpp's
own format strings, written here as they are in the source; every one of them is checked against
the llama.cpp vendored in the llama-cpp-python sdist of the CI bundle (taken from the bundle
build's download cache, or fetched into it by name, version and sha256 on a new machine), so a
reworded message upstream fails here rather than going uncounted.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROGRAM = REPO_ROOT / "roles" / "node_metrics" / "files" / "llmfleet-engine.mtail"
CACHE = Path(os.environ.get("LLMFLEET_CACHE", "/var/cache/llmfleet"))
SOURCE_ENTRY = "llama-cpp-source"  # bundles/ci.yml: the llama-cpp-python sdist
VENDOR = "llama_cpp_python-0.3.36/vendor/llama.cpp/"

PROMPT_BUCKETS = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
COMPLETION_BUCKETS = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]

# name: (file in vendor/llama.cpp, the C format string as printed: the source holds it
# between double quotes, with "\n" written as an escape)
FORMATS: dict[str, tuple[str, str]] = {
    "slot": ("tools/server/server-common.h", "slot %12.*s: id %2d | task %d | "),
    "srv": ("tools/server/server-common.h", "srv  %12.*s: "),
    "prompt_eval": (
        "tools/server/server-context.cpp",
        "prompt eval time = %10.2f ms / %5d tokens (%8.2f ms per token, %8.2f tokens per second)\n",
    ),
    "eval": (
        "tools/server/server-context.cpp",
        "       eval time = %10.2f ms / %5d tokens (%8.2f ms per token, %8.2f tokens per second)\n",
    ),
    "total": ("tools/server/server-context.cpp", "      total time = %10.2f ms / %5d tokens\n"),
    "progress": (
        "tools/server/server-context.cpp",
        "prompt processing, n_tokens = %6d, progress = %.2f, "
        "t = %6.2f s / %.2f tokens per second\n",
    ),
    "tg": ("tools/server/server-context.cpp", "n_gen = %6d, tg = %6.2f t/s, tg_3s = %6.2f t/s\n"),
    "stop": ("tools/server/server-context.cpp", "stop processing: n_tokens = %d, truncated = %d\n"),
    "kv_full": (
        "tools/server/server-context.cpp",
        "failed to find free space in the KV cache, retrying with smaller batch size, "
        "off = %d, n_batch = %d, ret = %d\n",
    ),
    "compute_error": ("tools/server/server-context.cpp", "%s off = %d, n_batch = %d, ret = %d\n"),
    "perf_prompt": (
        "src/llama-context.cpp",
        "%s: prompt eval time = %10.2f ms / %5d tokens "
        "(%8.2f ms per token, %8.2f tokens per second)\n",
    ),
    "perf_eval": (
        "src/llama-context.cpp",
        "%s:        eval time = %10.2f ms / %5d runs   "
        "(%8.2f ms per token, %8.2f tokens per second)\n",
    ),
    "cuda_malloc": (
        "ggml/src/ggml-cuda/ggml-cuda.cu",
        "%s: allocating %.2f MiB on device %d: cudaMalloc failed: %s\n",
    ),
    "cuda_error": ("ggml/src/ggml-cuda/ggml-cuda.cu", " error: %s\n"),  # after GGML_CUDA_NAME
    "cuda_error_where": (
        "ggml/src/ggml-cuda/ggml-cuda.cu",
        "  current device: %d, in function %s at %s:%d\n",
    ),
    "cuda_pool_retry": (
        "ggml/src/ggml-cuda/ggml-cuda.cu",
        " pool[%d]: alloc of %.2f MiB failed, flushing %.2f MiB of cached buffers and retrying\n",
    ),
    "pinned": (
        "ggml/src/ggml-cuda/ggml-cuda.cu",
        "%s: failed to allocate %.2f MiB of pinned memory: %s\n",
    ),
    "buft_buffer": ("ggml/src/ggml-alloc.c", "%s: failed to allocate %s buffer of size %zu\n"),
    "cpu_buffer": ("ggml/src/ggml-backend.cpp", "%s: failed to allocate buffer of size %zu\n"),
    "sched_reserve": ("ggml/src/ggml-backend.cpp", "%s: failed to reserve graph buffers\n"),
    "sched_retry": (
        "ggml/src/ggml-backend.cpp",
        "%s: failed to allocate graph, reserving (backend_ids_changed = %d)\n",
    ),
    "ggml_malloc": ("ggml/src/ggml.c", "%s: failed to allocate %6.2f MB\n"),
    "alloc_graph": ("src/llama-context.cpp", "%s: failed to allocate graph\n"),
    "compute_buffers": ("src/llama-context.cpp", "%s: failed to allocate compute buffers\n"),
    "pp_retry": (
        "src/llama-context.cpp",
        "%s: compute buffer allocation failed, retrying without pipeline parallelism\n",
    ),
    "pp_buffers": ("src/llama-context.cpp", "failed to allocate compute pp buffers"),
    "init_context": ("src/llama-context.cpp", "%s: failed to initialize the context: %s\n"),
    "kv_buffer": ("src/llama-kv-cache.cpp", "failed to allocate buffer for kv cache"),
    "model_buffer": ("src/llama-model.cpp", "unable to allocate %s buffer"),
    "load_error": ("src/llama.cpp", "%s: error loading model: %s\n"),
    "prompt_cache": (
        "tools/server/server-task.cpp",
        "failed to allocate memory for prompt cache state: %s\n",
    ),
}


def fmt(name: str, *args: object) -> str:
    """The message llama.cpp prints for FORMATS[name], without its newline."""
    c_format = FORMATS[name][1].replace("%zu", "%d")
    return (c_format % args).rstrip("\n")


def slot(task: int, message: str, func: str = "print_timings") -> str:
    return fmt("slot", 12, func, task % 4, task) + message


def srv(func: str, message: str) -> str:
    return fmt("srv", 12, func) + message


def timings(task: int, prompt: int, completion: int, style: str) -> list[str]:
    """print_timings() of one task, in one of the ways the line can reach mtail."""
    lines = [
        slot(task, fmt("prompt_eval", 211.58, prompt, 5.72, 174.88)),
        slot(task, fmt("eval", 1820.05, completion, 28.44, 35.16)),
        slot(task, fmt("total", 2031.63, prompt + completion)),
    ]
    if style == "prefix":  # --log-prefix
        return [f"I {line}" for line in lines]
    if style == "timestamps":  # --log-prefix --log-timestamps
        return [f"0.{task:02d}.345.678 I {line}" for line in lines]
    if style == "journal":  # journalctl -o short
        return [f"Nov 25 19:20:01 gpu-07 llama-server[4242]: {line}" for line in lines]
    if style == "continuation":  # older llama-server: prefix line, then bare lines
        return [
            slot(task, ""),
            fmt("prompt_eval", 9.5, prompt, 1.0, 1.0),
            fmt("eval", 9.5, completion, 1.0, 1.0),
        ]
    return lines


# (prompt tokens, completion tokens, how the lines look)
REQUESTS = [
    (37, 64, "plain"),
    (16, 16, "prefix"),
    (17, 32, "timestamps"),
    (0, 0, "plain"),  # empty prompt: released at once, timings of 0 tokens
    (40000, 1, "journal"),
    (4097, 512, "continuation"),
    (131072, 40000, "plain"),
    (200000, 33, "prefix"),
]

NOISE = [
    srv("init", "initializing, n_slots = 4, n_ctx_slot = 8192, kv_unified = 'true'"),
    slot(0, fmt("progress", 2048, 0.5, 3.2, 640.0), "print_timings_pp"),
    slot(0, fmt("tg", 100, 35.1, 34.9), "print_timings_tg"),
    slot(0, fmt("stop", 101, 0), "release"),
    fmt("perf_prompt", "llama_perf_context_print", 100.0, 500, 0.2, 5000.0),
    fmt("perf_eval", "llama_perf_context_print", 100.0, 20, 5.0, 200.0),
    srv("update_slots", fmt("kv_full", 0, 1024, 1)),
    "CUDA" + fmt("cuda_pool_retry", 0, 12.0, 512.0),
    fmt("pinned", "ggml_cuda_host_malloc", 512.0, "out of memory"),
    fmt("sched_retry", "ggml_backend_sched_alloc_graph", 0),
    srv(
        "log_server_r",
        'request: {"prompt": "what does CUDA error: out of memory mean?", "n_predict": 64}',
    ),
    "srv  log_server_r: done request: POST /completion 127.0.0.1 200",
]

# Out-of-memory episodes as llama.cpp logs them, each with the count it must add.
OOM_EPISODES: list[tuple[int, list[str]]] = [
    # model load on a too-small GPU: one failure, three lines
    (
        1,
        [
            fmt(
                "cuda_malloc",
                "ggml_backend_cuda_buffer_type_alloc_buffer",
                7500.0,
                0,
                "out of memory",
            ),
            fmt("buft_buffer", "alloc_tensor_range", "CUDA0", 7864320000),
            fmt("load_error", "llama_model_load", fmt("model_buffer", "CUDA0")),
            "llama_model_load_from_file_impl: failed to load model",
        ],
    ),
    # compute buffers during a request (--log-prefix)
    (
        1,
        [
            "E "
            + fmt(
                "cuda_malloc",
                "ggml_backend_cuda_buffer_type_alloc_buffer",
                1024.0,
                1,
                "out of memory",
            ),
            "E " + fmt("buft_buffer", "ggml_gallocr_reserve_n", "CUDA1", 1073741824),
            "E " + fmt("sched_reserve", "ggml_backend_sched_alloc_graph"),
            "E " + fmt("alloc_graph", "process_ubatch"),
            "E " + srv("update_slots", fmt("compute_error", "Compute error.", 0, 2048, -2)),
        ],
    ),
    # callers' lines alone (the first line unknown, e.g. another backend): counted once
    (
        1,
        [
            fmt("init_context", "llama_init_from_model", fmt("pp_buffers")),
            fmt("init_context", "llama_init_from_model", fmt("kv_buffer")),
        ],
    ),
    # pipeline parallelism retried, failing twice: two failed allocations
    (
        2,
        [
            fmt(
                "cuda_malloc",
                "ggml_backend_cuda_buffer_type_alloc_buffer",
                2048.0,
                0,
                "out of memory",
            ),
            fmt("buft_buffer", "ggml_gallocr_reserve_n", "CUDA0", 2147483648),
            fmt("compute_buffers", "graph_reserve"),
            fmt("pp_retry", "sched_reserve"),
            fmt(
                "cuda_malloc",
                "ggml_backend_cuda_buffer_type_alloc_buffer",
                1536.0,
                0,
                "out of memory",
            ),
            fmt("compute_buffers", "graph_reserve"),
        ],
    ),
    # CUDA_CHECK in the memory pool, then the abort
    (
        1,
        [
            "CUDA" + fmt("cuda_error", "out of memory"),
            fmt("cuda_error_where", 0, "alloc", "/build/ggml/src/ggml-cuda/ggml-cuda.cu", 466),
            "  cuMemCreate(&handle, reserve_size, &prop, 0)",
            "/build/ggml/src/ggml-cuda/ggml-cuda.cu:96: CUDA error",
        ],
    ),
    # host memory, CPU backend (--log-prefix --log-timestamps)
    (
        1,
        [
            "0.03.001.002 E "
            + fmt("cpu_buffer", "ggml_backend_cpu_buffer_type_alloc_buffer", 68719476736),
            "0.03.001.002 E " + fmt("buft_buffer", "alloc_tensor_range", "CPU", 68719476736),
        ],
    ),
    # ggml_malloc, then the abort
    (1, [fmt("ggml_malloc", "ggml_malloc", 4096.0), "/build/ggml/src/ggml.c:415: fatal error"]),
    # the server's prompt cache (it shrinks the cache and goes on)
    (1, [srv("alloc", fmt("prompt_cache", "std::bad_alloc"))]),
]
OOM_LOG = [line for _, lines in OOM_EPISODES for line in lines]
OOM_EXPECTED = sum(count for count, _ in OOM_EPISODES)


@pytest.fixture
def progs(tmp_path: Path) -> Path:
    folder = tmp_path / "progs"
    folder.mkdir()
    shutil.copy(PROGRAM, folder)
    return folder


def one_shot(mtail: str, progs: Path, log: Path) -> dict[str, float]:
    done = subprocess.run(
        [
            mtail,
            "--one_shot",
            "--one_shot_format=prometheus",
            "--emit_prog_label=false",
            "--logtostderr",
            "--port=0",
            f"--progs={progs}",
            f"--logs={log}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = {}
    for line in done.stdout.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, value = line.rsplit(" ", 1)
        metrics[series] = float(value)
    return metrics


def histogram(name: str, buckets: list[int], values: list[int]) -> dict[str, float]:
    """The series of a Prometheus histogram of `values`, computed here as the oracle."""
    series = {f'{name}_bucket{{le="{b}"}}': float(sum(v <= b for v in values)) for b in buckets}
    series[f'{name}_bucket{{le="+Inf"}}'] = float(len(values))
    series[f"{name}_sum"] = float(sum(values))
    series[f"{name}_count"] = float(len(values))
    return series


def test_program_compiles(mtail: str, progs: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [mtail, "--compile_only", "--logtostderr", "--port=0", f"--progs={progs}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Loaded program llmfleet-engine.mtail" in done.stderr
    # --compile_only does reject a broken program: the check above means something.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "llmfleet-engine.mtail").write_text(
        PROGRAM.read_text().replace("} else {", "} els {", 1)
    )
    bad = subprocess.run(
        [mtail, "--compile_only", "--logtostderr", "--port=0", f"--progs={broken}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "llmfleet-engine.mtail" in bad.stderr


def test_metrics_exist_at_zero_before_any_line(mtail: str, progs: Path, tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("")
    metrics = one_shot(mtail, progs, log)
    assert metrics == {
        "llmfleet_engine_oom_errors_total": 0.0,
        **histogram("llmfleet_engine_prompt_tokens", PROMPT_BUCKETS, []),
        **histogram("llmfleet_engine_completion_tokens", COMPLETION_BUCKETS, []),
    }


def test_requests_and_out_of_memory_in_a_real_format_log(
    mtail: str, progs: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    for task, (prompt, completion, style) in enumerate(REQUESTS):
        lines += NOISE[task % len(NOISE) : task % len(NOISE) + 2]
        lines += timings(task, prompt, completion, style)
        lines += OOM_EPISODES[task % len(OOM_EPISODES)][1]
    lines += NOISE
    log = tmp_path / "engine.log"
    log.write_text("\n".join(lines) + "\n")
    assert len(REQUESTS) == len(OOM_EPISODES), "every episode is in the log once"

    metrics = one_shot(mtail, progs, log)
    prompts = [p for p, _, _ in REQUESTS]
    completions = [c for _, c, _ in REQUESTS]
    assert metrics == {
        "llmfleet_engine_oom_errors_total": float(OOM_EXPECTED),
        **histogram("llmfleet_engine_prompt_tokens", PROMPT_BUCKETS, prompts),
        **histogram("llmfleet_engine_completion_tokens", COMPLETION_BUCKETS, completions),
    }
    # The oracle, spelled out for a few series.
    assert metrics['llmfleet_engine_prompt_tokens_bucket{le="16"}'] == 2  # 0 and 16
    assert metrics['llmfleet_engine_prompt_tokens_bucket{le="32"}'] == 3  # + 17
    assert metrics['llmfleet_engine_prompt_tokens_bucket{le="131072"}'] == 7
    assert metrics['llmfleet_engine_prompt_tokens_bucket{le="+Inf"}'] == 8
    assert metrics["llmfleet_engine_prompt_tokens_sum"] == 375239
    assert metrics['llmfleet_engine_completion_tokens_bucket{le="16"}'] == 3  # 0, 1, 16
    assert metrics['llmfleet_engine_completion_tokens_bucket{le="32768"}'] == 7
    assert metrics["llmfleet_engine_completion_tokens_count"] == 8
    assert OOM_EXPECTED == 9


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(NOISE, 0, id="noise-only"),
        pytest.param(OOM_LOG, OOM_EXPECTED, id="all-episodes-back-to-back"),
        pytest.param(OOM_LOG[:3], 1, id="one-cascade"),
        pytest.param(OOM_LOG[:3] + OOM_LOG[:3], 2, id="same-failure-twice"),
        pytest.param(OOM_LOG[1:3], 1, id="callers-only"),
        pytest.param([OOM_LOG[1], NOISE[0], OOM_LOG[2]], 2, id="callers-apart"),
    ],
)
def test_out_of_memory_cascades(
    mtail: str, progs: Path, tmp_path: Path, lines: list[str], expected: int
) -> None:
    log = tmp_path / "engine.log"
    log.write_text("\n".join(lines) + "\n")
    assert one_shot(mtail, progs, log)["llmfleet_engine_oom_errors_total"] == expected


@pytest.fixture(scope="module")
def llama_cpp_sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The llama-cpp-python sdist of the CI bundle (bundles/ci.yml), where the bundle build
    keeps its downloads (content-addressed, so the build later finds it there): fetched from
    the package index by name, version and sha256 when a new machine has none yet."""
    from llmfleet.bundle.fetch import Fetcher, HashCache, cached_download
    from llmfleet.bundle.spec import load_spec

    env = dict(os.environ)
    if "LLMFLEET_DEBIAN_MIRROR" not in env:  # as scripts/ci-bundle.sh sets it
        mirror = REPO_ROOT / "molecule" / "resources" / "debian-mirror.sh"
        env["LLMFLEET_DEBIAN_MIRROR"] = subprocess.run(
            [str(mirror)], capture_output=True, text=True, check=True
        ).stdout.strip()
    spec = load_spec(REPO_ROOT / "bundles" / "ci.yml", env)
    entry = next(entry for entry in spec.files if entry.name == SOURCE_ENTRY)
    return cached_download(
        Fetcher(),
        entry.origin,
        entry.sha256,
        CACHE / "bundles" / "ci" / ".cache" / "downloads",
        tmp_path_factory.mktemp("staging"),
        entry.name,
        HashCache(None),
    )


def test_format_strings_are_llama_cpps_own(llama_cpp_sdist: Path) -> None:
    wanted = {path for path, _ in FORMATS.values()}
    sources: dict[str, str] = {}
    with tarfile.open(llama_cpp_sdist, "r:gz") as sdist:
        for member in sdist:
            name = member.name.removeprefix(VENDOR)
            if name in wanted:
                handle = sdist.extractfile(member)
                assert handle is not None
                sources[name] = handle.read().decode("utf-8")
            if len(sources) == len(wanted):
                break
    assert set(sources) == wanted
    for key, (path, c_format) in FORMATS.items():
        literal = '"' + c_format.replace("\n", "\\n") + '"'
        if key == "cuda_error":
            literal = "GGML_CUDA_NAME " + literal
        if key == "cuda_pool_retry":
            literal = "GGML_CUDA_NAME " + literal
        assert literal in sources[path], f"{key}: {literal} is not in {path} any more"
    # print_timings() is what ends a task, and prints its lines with SLT_INF.
    server = sources["tools/server/server-context.cpp"]
    assert re.search(r'SLT_INF\(\*this,\s*"prompt eval time = ', server)
    assert re.search(r'SLT_INF\(\*this,\s*"       eval time = ', server)
    assert (
        '#define SLT_INF(slot, fmt, ...) LOG_INF("slot %12.*s: id %2d | task %d | " fmt'
        in (sources["tools/server/server-common.h"])
    )
