#!/usr/bin/env bash
# The README's two commands, on a Debian 12 machine as root:
#
#   scripts/dev.sh local [ansible-playbook args]   prepare this machine, build the CI bundle,
#                                                  start a disposable mirror and host, run
#                                                  site.yml, print a served completion
#   scripts/dev.sh test  [pytest args]             the whole test suite: lint, unit tests,
#                                                  Molecule scenarios (what CI runs)
#
# "Prepare" means: a virtual environment with the pinned tools (.venv), a
# Docker engine (Debian's docker.io, started when not running) and the Debian 12
# systemd test image (built with debootstrap, cached). Expensive things are kept
# under $LLMFLEET_CACHE (default /var/cache/llmfleet); a new machine rebuilds them.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export LLMFLEET_CACHE=${LLMFLEET_CACHE:-/var/cache/llmfleet}
export LLMFLEET_TEST_IMAGE=${LLMFLEET_TEST_IMAGE:-llmfleet/debian12-systemd:latest}
venv=${LLMFLEET_VENV:-$root/.venv}
python=${LLMFLEET_PYTHON:-python3}

say() { printf '\n== %s\n' "$*" >&2; }

apt_install() {
  say "installing $* (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_venv() {
  local stamp="$venv/.llmfleet-requirements" want
  # The control-side Python is pinned once, in the execution environment's
  # requirements: the venv takes them as constraints, so CI, the EE and a
  # control node run the same versions (a newer release on PyPI changes nothing).
  want=$(cat pyproject.toml execution-environment/requirements.txt | sha256sum | cut -d' ' -f1)
  if [[ ! -x $venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    say "virtual environment $venv (pinned tools from pyproject.toml)"
    "$python" -m venv "$venv" 2>/dev/null || { apt_install python3-venv && "$python" -m venv "$venv"; }
    mkdir -p "$LLMFLEET_CACHE"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -e ".[dev]" \
      -c execution-environment/requirements.txt 2>"$LLMFLEET_CACHE/pip.log" \
      || { grep -v '^WARNING: Location' "$LLMFLEET_CACHE/pip.log" | tail -n 30 >&2; exit 1; }
    echo "$want" >"$stamp"
  fi
  export PATH="$venv/bin:$PATH"
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  command -v dockerd >/dev/null || apt_install docker.io
  say "starting dockerd (log: $LLMFLEET_CACHE/dockerd.log)"
  mkdir -p "$LLMFLEET_CACHE"
  nohup dockerd >"$LLMFLEET_CACHE/dockerd.log" 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return
    sleep 1
  done
  tail -n 20 "$LLMFLEET_CACHE/dockerd.log" >&2
  echo "dockerd did not start within 60 s" >&2
  exit 1
}

ensure_image() {
  molecule/resources/image/build.sh
}

# Debian packages the build side needs: debootstrap (test image), apt-utils and
# gnupg (`llmfleet bundle build` writes and signs apt repositories).
ensure_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v apt-ftparchive >/dev/null || missing+=(apt-utils)
  command -v gpg >/dev/null || missing+=(gnupg)
  command -v chromium >/dev/null || missing+=(chromium)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
}

prepare() {
  ensure_tools
  ensure_venv
  ensure_docker
  ensure_image
}

# The container flags that let systemd run in Docker here (--privileged fails).
systemd_container_flags=(
  --cap-add SYS_ADMIN
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw
  --tmpfs /run --tmpfs /run/lock
)

run_local() {
  prepare
  say "the CI bundle (scripts/ci-bundle.sh: built once, then reused)"
  scripts/ci-bundle.sh >/dev/null
  # The local service asks for an API key, and its metrics for a password, like
  # every site's: random ones, made once and kept (mode 0600) beside the bundle;
  # inventories/local reads them.
  local secret
  for secret in local-api-key local-metrics-password; do
    [[ -s $LLMFLEET_CACHE/$secret ]] && continue
    (umask 077 && "$venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' \
      >"$LLMFLEET_CACHE/$secret")
  done
  local network=llmfleet-local mirror=llmfleet-mirror host=llmfleet-local
  say "starting the disposable containers $mirror and $host on the internal network $network"
  docker rm -f "$mirror" "$host" >/dev/null 2>&1 || true
  docker network rm "$network" >/dev/null 2>&1 || true
  docker network create --internal "$network" >/dev/null
  mkdir -p "$LLMFLEET_CACHE/ccache"
  docker run -d --name "$mirror" --hostname "$mirror" --network "$network" \
    "${systemd_container_flags[@]}" "$LLMFLEET_TEST_IMAGE" >/dev/null
  # The host compiles llama.cpp once; its compiler cache stays on this machine.
  docker run -d --name "$host" --hostname "$host" --network "$network" \
    -v "$LLMFLEET_CACHE/ccache:/var/cache/llmfleet/ccache" \
    "${systemd_container_flags[@]}" "$LLMFLEET_TEST_IMAGE" >/dev/null
  if [[ ${LLMFLEET_KEEP:-0} != 1 ]]; then
    trap 'docker rm -f '"$mirror $host"' >/dev/null 2>&1; docker network rm '"$network"' >/dev/null 2>&1 || true' EXIT
  fi
  for name in "$mirror" "$host"; do
    for _ in $(seq 60); do
      state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
      [[ $state == running || $state == degraded ]] && break
      sleep 1
    done
  done
  say "ansible-playbook site.yml -i inventories/local"
  ansible-playbook -i inventories/local site.yml "$@"
  say "hardware report (llmfleet report, from the fact cache)"
  llmfleet report --facts .cache/facts
  say "the endpoint, from the host itself"
  docker exec -i "$host" python3 - <<'PY'
import json, time, urllib.request
base = "http://127.0.0.1:8080"
# A client sends the API key as a bearer token; here it is read from the host's key file.
key = open("/etc/llmfleet/api-key").read().strip()
with urllib.request.urlopen(base + "/health", timeout=10) as response:
    print(f"endpoint  {base} (on llmfleet-local)")
    print(f"/health   {response.status} {response.read().decode().strip()}")
body = {"messages": [{"role": "user", "content": "Name one planet of the solar system."}],
        "max_tokens": 32, "temperature": 0}
request = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                  headers={"Content-Type": "application/json",
                                           "Authorization": f"Bearer {key}"})
start = time.monotonic()
with urllib.request.urlopen(request, timeout=120) as response:
    answer = json.load(response)
elapsed = time.monotonic() - start
print(f"model     {answer.get('model')}")
print(f"reply     {answer['choices'][0]['message']['content'].strip()!r}")
print(f"latency   {elapsed * 1000:.0f} ms for {answer['usage']['completion_tokens']} tokens")
PY
}

run_tests() {
  prepare
  say "pytest: lint, unit tests, Molecule scenarios"
  pytest "$@"
}

case ${1:-} in
  local) shift; run_local "$@" ;;
  test) shift; run_tests "$@" ;;
  *) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
