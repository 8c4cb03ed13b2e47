#!/usr/bin/env bash
# Installs Debian's nats-server, pinned to 2.9.10 (the version the cluster
# is built for: docs/cluster.md), for the cluster tests. The tests start
# their own servers on loopback, each with a temporary store, and stop
# them. Idempotent: nothing to do when the pinned version is there.
set -euo pipefail
want=2.9.10
if command -v nats-server >/dev/null && nats-server --version 2>&1 | grep -qx "nats-server: v$want"; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "tests/nats/setup.sh: nats-server $want is needed: apt-get install nats-server=$want-*" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "nats-server=$want-*" >/dev/null
nats-server --version
