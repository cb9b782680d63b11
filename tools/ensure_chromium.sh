#!/usr/bin/env bash
# Make sure the system browser that tests/test_notebook_browser.py drives is installed.
#
# `make test` calls this first, so a fresh clone needs nothing done by hand. The browser test uses
# Debian's Chromium through Playwright (never `playwright install`, which downloads its own build).
# Where it is missing we install it with apt-get: directly as root, through sudo when sudo can run
# without a password prompt, and otherwise we stop with one line saying what to install.
# DUALLORA_CHROMIUM points the test (and this check) at another Chromium binary.
set -euo pipefail
chromium="${DUALLORA_CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
  as_root=(sudo -n)
else
  echo "make test: $chromium not found; install Debian's chromium as root" \
       "(apt-get install -y chromium) or set DUALLORA_CHROMIUM to a Chromium binary" >&2
  exit 1
fi
if ! command -v apt-get > /dev/null; then
  echo "make test: $chromium not found and apt-get is missing; install Chromium with your" \
       "package manager and set DUALLORA_CHROMIUM to its binary" >&2
  exit 1
fi
echo "make test: installing Debian's chromium for the browser test (once) ..."
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null
[ -x "$chromium" ] || { echo "make test: apt-get finished but $chromium is still missing" >&2; exit 1; }
echo "make test: chromium installed: $("$chromium" --version 2> /dev/null || echo "$chromium")"
