#!/usr/bin/env bash
# Set-up of a fresh machine (Python 3.11): the project with its dev extras, Debian's
# Chromium for the UI test (Playwright drives it; no browser is downloaded) and Debian's
# wget, whose WARCs the ingest tests read as another crawler's.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[dev]"
missing=""
command -v chromium > /dev/null || missing="$missing chromium"
command -v wget > /dev/null || missing="$missing wget"
if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing > /dev/null
fi
echo "set up: $(python3 -c 'import asagi_dagster, dagster; print("asagi-dagster with dagster", dagster.__version__)'); $(chromium --version 2>/dev/null | head -1)"
