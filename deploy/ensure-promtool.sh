#!/usr/bin/env bash
# The manifest checks run the dashboard's PromQL through promtool, from Debian's
# `prometheus` package; install it if missing, without leaving a Prometheus running.
set -euo pipefail
command -v promtool >/dev/null 2>&1 && exit 0
echo "promtool not found: installing Debian's prometheus package" >&2
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
$sudo_cmd systemctl disable --now prometheus >/dev/null 2>&1 || true
$sudo_cmd pkill -x prometheus >/dev/null 2>&1 || true
command -v promtool >/dev/null
