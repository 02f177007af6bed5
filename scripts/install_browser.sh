#!/usr/bin/env bash
# Installs what the browser tests (tests/browser, marker `browser`) need: Debian's `chromium`, driven
# by Playwright through executable_path. Playwright's own browser download cannot reach its CDN from
# every machine, while the Debian archive can, so the distribution package is the one dependency.
# Idempotent and quiet: does nothing when the browser is already there.
set -euo pipefail

CHROMIUM=${MELEEWM_CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: $CHROMIUM is missing and apt-get is not available;" \
        "install Chromium with your package manager and set MELEEWM_CHROMIUM to its path" >&2
    exit 1
fi

# Root runs apt-get directly; anyone else goes through sudo (asks for a password if needed).
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "install_browser.sh: installing Debian's chromium for the browser tests (one-time)" >&2
# apt's chatter goes to a log that is shown only when something fails.
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium; } >"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "install_browser.sh: apt-get could not install chromium (log above)" >&2
    exit 1
fi

if [ ! -x "$CHROMIUM" ]; then
    echo "install_browser.sh: apt-get installed chromium but $CHROMIUM is still missing" >&2
    exit 1
fi
