#!/usr/bin/env bash
# Prints the path of a tool from a Debian package, for the tests, without
# installing the package (no service, no dpkg database entry):
#
#   scripts/debian-tool.sh prometheus promtool              # -> the promtool binary
#   scripts/debian-tool.sh prometheus-alertmanager amtool
#   scripts/debian-tool.sh mtail mtail
#   "$(scripts/debian-tool.sh prometheus promtool)" check rules rules.yml
#
# The tool on PATH wins. Otherwise the package is downloaded once with
# `apt-get download` (from the configured apt sources, the datacenter mirror
# inside the air gap) into ${LLMFLEET_CACHE:-/var/cache/llmfleet}/tools/ and
# unpacked there with `dpkg-deb -x`; later calls reuse the unpacked binary.
# Messages go to stderr, the path alone to stdout.
set -euo pipefail
(($# == 2)) || { echo "usage: $0 PACKAGE BINARY" >&2; exit 2; }
package=$1 binary_name=$2
me="debian-tool.sh ($package)"

if found=$(command -v "$binary_name" 2>/dev/null); then
  printf '%s\n' "$found"
  exit 0
fi

tools="${LLMFLEET_CACHE:-/var/cache/llmfleet}/tools"
root="$tools/$package"
binary="$root/usr/bin/$binary_name"
works() { "$1" --version >/dev/null 2>&1 || "$1" --help >/dev/null 2>&1; }

if [[ -x $binary ]] && works "$binary"; then
  printf '%s\n' "$binary"
  exit 0
fi

for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "$me: $tool is missing; install $binary_name or run on Debian/Ubuntu" >&2
    exit 1
  }
done

mkdir -p "$tools"
work=$(mktemp -d "$tools/.$package.XXXXXX")
trap 'rm -rf "$work"' EXIT

deb=$(find "$tools" -maxdepth 1 -name "${package}_*.deb" -print | sort | tail -n 1)
if [[ -z $deb ]]; then
  echo "$me: downloading Debian's $package package into $tools" >&2
  # apt-get download writes into the current folder; as root it warns that the
  # download is unsandboxed (the _apt user cannot write there), which is fine.
  (cd "$work" && apt-get download -q "$package" >&2) || {
    echo "$me: apt-get download failed; check the apt sources (apt-get update)" >&2
    exit 1
  }
  fetched=$(find "$work" -maxdepth 1 -name "${package}_*.deb" -print | head -n 1)
  [[ -n $fetched ]] || { echo "$me: apt-get download left no ${package}_*.deb" >&2; exit 1; }
  deb="$tools/$(basename "$fetched")"
  mv "$fetched" "$deb"
fi

# Unpack beside the cache and swap the folder in, so a failure never leaves a
# half-unpacked tree in use.
dpkg-deb -x "$deb" "$work/root"
works "$work/root/usr/bin/$binary_name" || {
  echo "$me: $deb holds no working usr/bin/$binary_name" >&2
  exit 1
}
rm -rf "$root"
mv "$work/root" "$root"
printf '%s\n' "$binary"
