#!/usr/bin/env bash
# The integration tests start their own redis-server on a free port; install it if missing.
set -euo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
echo "redis-server not found: installing Debian's redis-server package" >&2
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
# Only the binary is needed; don't leave a system service running on 6379.
$sudo_cmd systemctl disable --now redis-server >/dev/null 2>&1 || true
command -v redis-server >/dev/null
