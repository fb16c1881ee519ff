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

# shellcheck source=scripts/apt-install.sh
source "$(dirname "$0")/apt-install.sh"
apt_install ci-install-browser -- chromium
command -v chromium >/dev/null 2>&1 || { echo "ci-install-browser: no chromium after install" >&2; exit 1; }
echo "ci-install-browser: installed $(chromium --version 2>/dev/null || echo chromium)"
