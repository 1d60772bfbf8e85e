"""The state the converge leaves on every fleet host: apt reads only the mirror, Docker runs
on the validated daemon.json with the engine image loaded from the bundle, and the NVIDIA
parts (packages, runtime, CUDA and nouveau files) are there exactly on the host with a GPU.

Run by verify.yml (molecule/resources/testinfra.yml); running the image stays in verify.yml.
"""

from __future__ import annotations

import json

import pytest
from testinfra_helpers import (
    apt_source_urls,
    apt_sources,
    assert_nvidia_smi_double,
    in_group,
    installed_packages,
    unit_property,
    variables,
)

testinfra_hosts = ["ansible://fleet"]

ENGINE_IMAGE = "llmfleet/llama-server:0.3.36-cpu"  # bundles/ci-gpu.yml, engine-image
IMAGE_DIR = "/var/cache/llmfleet/images"
NVIDIA_RUNTIME = "/usr/bin/nvidia-container-runtime"
GPU_FILES = [
    "/etc/profile.d/llmfleet-cuda.sh",
    "/etc/ld.so.conf.d/llmfleet-cuda.conf",
    "/etc/modprobe.d/llmfleet-blacklist-nouveau.conf",
]
GPU_PACKAGE_PREFIXES = ("nvidia", "libcuda", "libnvidia", "libcudart")


def has_gpu(host) -> bool:
    return in_group(host, "gpu_sim")


def daemon_json(host) -> dict:
    return json.loads(host.file("/etc/docker/daemon.json").content_string)


def test_the_nvidia_smi_double_is_where_the_inventory_puts_it(host) -> None:
    assert_nvidia_smi_double(host)


def test_the_mirror_is_the_only_apt_source(host) -> None:
    assert apt_sources(host) == ["/etc/apt/sources.list.d/llmfleet-bundle.sources"]
    assert host.file("/etc/apt/sources.disabled-by-llmfleet").is_directory


@pytest.mark.parametrize("name", ["docker.io", "python3-requests"])
def test_docker_is_installed_from_the_mirror(host, name: str) -> None:
    assert host.package(name).is_installed
    mirror = f"http://{variables(host)['groups']['mirror'][0]}/apt/debian12"
    urls = apt_source_urls(host, name)
    assert urls and all(url.startswith(mirror) for url in urls), urls


def test_docker_is_enabled_and_active(host) -> None:
    assert unit_property(host, "docker.service", "ActiveState") == "active"
    assert unit_property(host, "docker.service", "UnitFileState") == "enabled"


def test_daemon_json(host) -> None:
    f = host.file("/etc/docker/daemon.json")
    assert f.is_file
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
    config = daemon_json(host)
    assert config["log-opts"]["max-size"] == "100m"
    assert config["live-restore"] is True
    assert "default-runtime" not in config
    # The inventory's container_runtime_daemon_options come out as given.
    for key, value in variables(host).get("container_runtime_daemon_options", {}).items():
        assert config[key] == value, key
    runtimes = config.get("runtimes", {})
    assert ("nvidia" in runtimes) == has_gpu(host), runtimes
    if has_gpu(host):
        assert runtimes["nvidia"]["path"] == NVIDIA_RUNTIME


def test_docker_runs_on_daemon_json(host) -> None:
    runtimes = json.loads(host.check_output("docker info --format %s", "{{json .Runtimes}}"))
    assert ("nvidia" in runtimes) == has_gpu(host), runtimes
    assert host.check_output("docker info --format %s", "{{.DefaultRuntime}}") == "runc"
    storage = daemon_json(host).get("storage-driver")
    if storage:
        assert host.check_output("docker info --format %s", "{{.Driver}}") == storage


def test_the_engine_image_is_loaded_from_the_bundle(host) -> None:
    assert host.run("docker image inspect %s", ENGINE_IMAGE).rc == 0
    images = host.file(IMAGE_DIR)
    assert images.is_directory
    assert (images.user, images.group, images.mode) == ("root", "root", 0o700)
    archive = host.file(f"{IMAGE_DIR}/llama-server-0.3.36-cpu.tar")
    assert archive.is_file
    assert (archive.user, archive.group, archive.mode) == ("root", "root", 0o600)


def test_nvidia_and_cuda_packages_only_on_the_gpu_host(host) -> None:
    gpu_packages = sorted(
        name for name in installed_packages(host) if name.startswith(GPU_PACKAGE_PREFIXES)
    )
    if has_gpu(host):
        assert {"nvidia-smi", "libcuda1", "libnvidia-ml1", "nvidia-persistenced"} <= set(
            gpu_packages
        )
    else:
        assert gpu_packages == []


@pytest.mark.parametrize("path", GPU_FILES)
def test_gpu_files_only_on_the_gpu_host(host, path: str) -> None:
    assert host.file(path).exists == has_gpu(host)
