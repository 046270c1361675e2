#!/usr/bin/env bash
# Installs the ops tools the acceptance tests use: promtool/prometheus, systemd-analyze,
# PostgreSQL's server binaries (the tests start a throwaway cluster of their own: tests/pg.py)
# and Chromium (the status page's headless browser test).
# Idempotent: does nothing when all are already there. Needs root (CI runs as root).
set -euo pipefail

have_postgres() {
    # Debian keeps initdb and postgres under /usr/lib/postgresql/<version>/bin, off PATH.
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
have_postgres || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-ops: promtool, prometheus, systemd-analyze, PostgreSQL and Chromium present"
    exit 0
fi

echo "install-ops: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if [[ " ${missing[*]} " == *" postgresql "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    # Only the binaries are wanted: no "main" cluster for the package to create and start.
    $SUDO mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
$SUDO apt-get update -q
# The Debian prometheus package does not start a service in containers; we only want binaries.
# confold/confdef: the createcluster.conf written above is kept without a conffile prompt.
$SUDO apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"

command -v promtool >/dev/null && command -v systemd-analyze >/dev/null && have_postgres \
    && command -v chromium >/dev/null
echo "install-ops: done"
