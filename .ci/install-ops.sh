#!/usr/bin/env bash
# Installs the ops tools the acceptance tests use: promtool/prometheus and systemd-analyze.
# Idempotent: does nothing when both are already on PATH. Needs root (CI runs as root).
set -euo pipefail

missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-ops: promtool, prometheus and systemd-analyze present"
    exit 0
fi

echo "install-ops: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
# The Debian prometheus package does not start a service in containers; we only want binaries.
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

command -v promtool >/dev/null && command -v systemd-analyze >/dev/null
echo "install-ops: done"
