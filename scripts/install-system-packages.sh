#!/usr/bin/env bash
# Install the Debian packages the postgres and browser test tiers need, when missing.
#
#   scripts/install-system-packages.sh [postgresql] [chromium]   # default: both
#
# Only root can install: anyone else gets a note saying what to install, and exit status 0
# (scripts/run-tests.sh then skips the tier, or fails it under CI=true).
set -euo pipefail

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(postgresql chromium)

have() {
  case "$1" in
    postgresql) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null ;;
    chromium) [ -x /usr/bin/chromium ] ;;
    *) echo "install-system-packages.sh: unknown package '$1'" >&2; exit 2 ;;
  esac
}

missing=()
for name in "${wanted[@]}"; do
  have "$name" || missing+=("$name")
done
[ ${#missing[@]} -gt 0 ] || exit 0

if [ "$(id -u)" != 0 ]; then
  echo "Not root, so not installing: ${missing[*]}. Run: sudo apt-get install ${missing[*]}" >&2
  exit 0
fi
# fonts-liberation gives headless Chromium real fonts to render pages with.
packages=("${missing[@]}")
[[ " ${missing[*]} " == *" chromium "* ]] && packages+=(fonts-liberation)
echo "Installing Debian packages: ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
