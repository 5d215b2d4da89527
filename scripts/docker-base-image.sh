#!/usr/bin/env bash
# Build TrainHub's local base image (Debian bookworm with Python 3.11 and venv) without pulling
# from any registry: debootstrap into a folder, `docker import` it. Skipped when it exists. Lean on
# purpose (no pip): image builds install packages with uv, which TrainHub copies in.
set -euo pipefail
image="${1:-trainhub/python:3.11-bookworm}"
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi
# The Debian mirror this machine already uses, read from its apt sources.
mirror="$( (grep -rhoE '(https?://[^ ]+/debian)/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) \
  | head -1 | tr -d ' ')"
if [ -z "$mirror" ]; then
  echo "No Debian mirror found in the apt sources: cannot build $image." >&2
  exit 1
fi
root="$(mktemp -d /tmp/trainhub-rootfs-XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "Building $image from $mirror (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null
tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/usr/bin/python3"]' - "$image" >/dev/null
echo "Built $image"
