#!/usr/bin/env bash
# Install the Debian packages TrainHub needs, only those missing. Usage: system-deps.sh run|test
set -euo pipefail
profile="${1:-run}"

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have redis-server || need+=(redis-server)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
have mpirun || need+=(openmpi-bin)
have bwrap || need+=(bubblewrap)
if [ "$profile" = test ]; then
  have chromium || need+=(chromium)
  have ip || need+=(iproute2)
  have openssl || need+=(openssl)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  # The Slurm clusters' tests start a real Slurm (tests/helpers/slurm.py).
  have slurmctld || need+=(slurm-wlm)
  have munged || need+=(munge)
fi

if [ "${#need[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "TrainHub needs these Debian packages: ${need[*]}. Install them as root (apt-get install ${need[*]})." >&2
  exit 1
fi
echo "Installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
