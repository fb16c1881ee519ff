#!/usr/bin/env bash
# Idempotently install Slurm (slurmctld, slurmd, client commands) and munge from
# Debian/Ubuntu packages, for CI machines and containers (run as root, or via sudo).
# Does nothing if everything is already installed; start the cluster afterwards with
# scripts/local-slurm.sh start.
set -euo pipefail

need=(slurmctld slurmd sbatch squeue scontrol sinfo munged munge)
missing=()
for c in "${need[@]}"; do
    command -v "$c" >/dev/null 2>&1 || [[ -x "/usr/sbin/$c" ]] || missing+=("$c")
done
if ((${#missing[@]} == 0)); then
    echo "ci-install-slurm: slurm and munge already installed ($(sinfo --version 2>/dev/null || echo '?'))"
    exit 0
fi
echo "ci-install-slurm: missing ${missing[*]}; installing slurm-wlm and munge"

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "ci-install-slurm: need root or sudo" >&2; exit 1; }
    SUDO=(sudo -E)
fi
export DEBIAN_FRONTEND=noninteractive

# Containers without an init system: keep package scripts from trying to start the
# daemons (local-slurm.sh starts them with its own configuration).  Only add the
# policy if none exists, and remove it again afterwards.
POLICY=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 0755 "$POLICY"
    added_policy=1
fi
cleanup() { if ((added_policy)); then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT

for attempt in 1 2 3; do
    if "${SUDO[@]}" apt-get update -q &&
        "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            slurm-wlm munge; then
        break
    fi
    if ((attempt == 3)); then
        echo "ci-install-slurm: apt-get failed 3 times" >&2
        exit 1
    fi
    echo "ci-install-slurm: apt-get failed (attempt $attempt); retrying in $((attempt * 10)) s" >&2
    sleep $((attempt * 10))
done
echo "ci-install-slurm: installed $(sinfo --version 2>/dev/null || echo slurm)"
