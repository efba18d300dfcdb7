#!/usr/bin/env bash
# Set-up of a fresh machine (Python 3.11): the project with its dev extras, Debian's
# Chromium for the UI test (Playwright drives it; no browser is downloaded), Debian's
# wget, whose WARCs the ingest tests read as another crawler's, and Debian's PostgreSQL
# server, which the instance-storage tests start as a cluster's Dagster would use it, and
# Debian's Noto CJK fonts, so the UI test's screenshots show Japanese text.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[dev]"
missing=""
command -v chromium > /dev/null || missing="$missing chromium"
command -v wget > /dev/null || missing="$missing wget"
ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1 || missing="$missing postgresql"
# Japanese glyphs in the UI test's screenshots (sample rows, captions), not tofu boxes.
fc-list :lang=ja 2> /dev/null | grep -q . || missing="$missing fonts-noto-cjk"
if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing > /dev/null
fi
echo "set up: $(python3 -c 'import asagi_dagster, dagster; print("asagi-dagster with dagster", dagster.__version__)'); $(chromium --version 2>/dev/null | head -1)"
