#!/usr/bin/env bash
# Idempotently install Debian's chromium for the browser tests (tests/cli/test_plots.py opens
# the plot-resources pages in it, headless, through Playwright). Debian's package rather than
# `playwright install chromium`: it comes from the distribution's mirrors CI already uses, and
# the tests launch it by path (shutil.which("chromium")), so nothing else is downloaded.
# Run as root or via sudo. Does nothing if chromium is already installed.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "ci-install-browser: chromium already installed ($(chromium --version 2>/dev/null || echo '?'))"
    exit 0
fi
echo "ci-install-browser: installing chromium"

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "ci-install-browser: need root or sudo" >&2; exit 1; }
    SUDO=(sudo -E)
fi
export DEBIAN_FRONTEND=noninteractive

for attempt in 1 2 3; do
    if timeout 300 "${SUDO[@]}" apt-get update -q &&
        timeout 900 "${SUDO[@]}" apt-get install -y -q chromium; then
        break
    fi
    if ((attempt == 3)); then
        echo "ci-install-browser: apt-get failed 3 times" >&2
        exit 1
    fi
    echo "ci-install-browser: apt-get failed (attempt $attempt); retrying in $((attempt * 10)) s" >&2
    sleep $((attempt * 10))
done
command -v chromium >/dev/null 2>&1 || { echo "ci-install-browser: no chromium after install" >&2; exit 1; }
echo "ci-install-browser: installed $(chromium --version 2>/dev/null || echo chromium)"
