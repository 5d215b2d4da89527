#!/usr/bin/env bash
# Make a Docker engine answer on this machine: install Debian's docker.io if missing, start
# dockerd in the background when nothing answers. Exits non-zero (with a reason) when it cannot.
set -euo pipefail
log_dir="${TRAINHUB_DATA_DIR:-$(pwd)/var}"
mkdir -p "$log_dir"

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Docker is not installed and installing it needs root (apt-get install docker.io)." >&2
    exit 1
  fi
  echo "Installing Debian's docker.io"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null || {
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
  }
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "No Docker engine answers and starting dockerd needs root." >&2
  exit 1
fi
echo "Starting dockerd (log: $log_dir/dockerd.log)"
nohup dockerd >"$log_dir/dockerd.log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not come up; see $log_dir/dockerd.log" >&2
exit 1
