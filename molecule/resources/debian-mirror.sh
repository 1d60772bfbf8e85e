#!/usr/bin/env bash
# Prints the Debian mirror this machine's apt already uses (the first URI of a
# source whose suite is a Debian release), so the test image and the CI bundle
# come from the same place as the machine's own packages. Fails when there is none.
set -euo pipefail
{
  awk '/^URIs:/ {uri=$2} /^Suites:/ && /(bookworm|trixie|bullseye)( |$)/ && uri {print uri; exit}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true
  awk '$1 == "deb" && $3 ~ /^(bookworm|trixie|bullseye)$/ {print $2; exit}' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true
} | head -n 1 | grep . || { echo "no Debian mirror in this machine's apt sources: set LLMFLEET_DEBIAN_MIRROR" >&2; exit 1; }
