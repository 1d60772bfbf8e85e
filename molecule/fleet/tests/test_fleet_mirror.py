"""The state the converge leaves on the mirror: nginx serving the bundle and the builds."""

from __future__ import annotations

testinfra_hosts = ["ansible://mirror"]


def test_nginx_serves_the_bundle(host) -> None:
    nginx = host.service("nginx")
    assert nginx.is_running and nginx.is_enabled
    assert host.socket("tcp://0.0.0.0:80").is_listening
    assert host.file("/srv/llmfleet/bundle").is_symlink
    assert host.file("/srv/llmfleet/bundle").linked_to.startswith("/srv/llmfleet/releases/")
    assert host.file("/srv/llmfleet/bundle/manifest.json").exists


def test_the_health_url_answers_ok(host) -> None:
    fetch = (
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1/health').read().decode())"
    )
    assert host.check_output(f'python3 -c "{fetch}"') == "ok"


def test_the_first_host_published_its_engine_build(host) -> None:
    builds = host.file("/srv/llmfleet/builds")
    assert builds.is_directory
    assert any(name.endswith(".tar.gz.sha256") for name in builds.listdir())
