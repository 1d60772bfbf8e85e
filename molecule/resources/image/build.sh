#!/usr/bin/env bash
# Builds the Debian 12 systemd image that the Molecule scenarios and the local
# run use as their test hosts. No image registry is reachable from an air gap,
# so the root filesystem comes from debootstrap and is loaded with
# `docker import`. The image is tagged with a hash of this script: it is rebuilt
# only when this script changes, and the root filesystem tarball is cached so a
# Docker engine that lost its images re-imports in seconds.
#
# Environment:
#   LLMFLEET_CACHE           cache folder (default /var/cache/llmfleet)
#   LLMFLEET_DEBIAN_MIRROR   Debian mirror for debootstrap (default: the first Debian
#                            URI in this machine's own apt sources)
#   LLMFLEET_TEST_IMAGE      the tag the scenarios use (default llmfleet/debian12-systemd:latest)
set -euo pipefail

repo=llmfleet/debian12-systemd
suite=bookworm
packages=python3,python3-apt,systemd,systemd-sysv,sudo,ca-certificates,iproute2
mirror=${LLMFLEET_DEBIAN_MIRROR:-$("$(dirname "${BASH_SOURCE[0]}")/../debian-mirror.sh")}
cache=${LLMFLEET_CACHE:-/var/cache/llmfleet}/images
stable_tag=${LLMFLEET_TEST_IMAGE:-$repo:latest}

script_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
image="$repo:$script_hash"
tarball="$cache/debian12-systemd-$script_hash.tar"

log() { printf 'image: %s\n' "$*" >&2; }

if docker image inspect "$image" >/dev/null 2>&1; then
  docker tag "$image" "$stable_tag"
  log "$image is present (tagged $stable_tag)"
  exit 0
fi

mkdir -p "$cache"
if [[ ! -s $tarball ]]; then
  command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap"; exit 1; }
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs" "$tarball.partial"' EXIT
  log "debootstrap $suite (minbase: $packages) from $mirror"
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }

  # A container has no consoles, no udev and no kernel to tune: units that
  # would only fail there are masked. Everything else boots as on a server.
  for unit in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
              systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
              sys-kernel-tracing.mount systemd-remount-fs.service systemd-firstboot.service; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  : >"$rootfs/etc/machine-id"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
  tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  rm -rf "$rootfs"
  trap - EXIT
fi

log "importing $tarball as $image"
docker import \
  --change 'ENV container=docker' \
  --change 'CMD ["/lib/systemd/systemd"]' \
  "$tarball" "$image" >/dev/null
docker tag "$image" "$stable_tag"
log "built $image (tagged $stable_tag)"
