#!/usr/bin/env bash
# The browser test drives Debian's chromium with playwright (no browser download is
# possible here); install the package if it is missing.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
echo "chromium not found: installing Debian's chromium package" >&2
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
