#!/usr/bin/env bash
# Idempotently install Slurm (slurmctld, slurmd, slurmdbd, client commands), munge and
# MariaDB from Debian/Ubuntu packages, for CI machines and containers (run as root, or via
# sudo). slurmdbd and MariaDB give the local cluster accounting, so `sacct` shows each job
# step (torc-trio's slurm execution mode and `torc-trio slurm sacct` are tested with it).
# Does nothing if everything is already installed; start the cluster afterwards with
# scripts/local-slurm.sh start.
set -euo pipefail

PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
need=(slurmctld slurmd slurmdbd sbatch squeue scontrol sinfo sacct sacctmgr munged munge
      mariadbd mariadb-install-db)
missing=()
for c in "${need[@]}"; do
    command -v "$c" >/dev/null 2>&1 || [[ -x "/usr/sbin/$c" ]] || [[ -x "/usr/bin/$c" ]] ||
        missing+=("$c")
done
if ((${#missing[@]} == 0)); then
    echo "ci-install-slurm: slurm, slurmdbd, munge and mariadb already installed ($(sinfo --version 2>/dev/null || echo '?'))"
    exit 0
fi
echo "ci-install-slurm: missing ${missing[*]}; installing ${PACKAGES[*]}"

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "ci-install-slurm: need root or sudo" >&2; exit 1; }
    SUDO=(sudo -E)
fi
# shellcheck source=scripts/apt-install.sh
source "$(dirname "$0")/apt-install.sh"

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

apt_install ci-install-slurm --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -- "${PACKAGES[@]}"
echo "ci-install-slurm: installed $(sinfo --version 2>/dev/null || echo slurm)"
