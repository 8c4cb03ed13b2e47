#!/usr/bin/env bash
# Two `toolplane serve` binaries, A and B, against each other with wrk,
# interleaved, three rounds: /healthz (128 connections) and a REST echo
# call (64 connections, server/bench/call.lua), 10 s each.
#   bash server/bench/ab.sh target/release/toolplane /path/to/other/toolplane
# Loopback only; each server with its defaults and a temporary data dir.
set -eu
a=$1 b=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
"$a" serve --http 127.0.0.1:7171 --data "$tmp/a" 2>/dev/null & pa=$!
"$b" serve --http 127.0.0.1:7172 --data "$tmp/b" 2>/dev/null & pb=$!
trap 'kill $pa $pb 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 3
for r in 1 2 3; do
    for side in A:7171 B:7172; do
        name=${side%:*} port=${side#*:}
        echo "== round $r $name /healthz"
        wrk -t2 -c128 -d10s --latency "http://127.0.0.1:$port/healthz" | grep -E "Requests/sec|  99%|Non-2xx"
        echo "== round $r $name REST echo"
        wrk -t1 -c64 -d10s --latency -s "$here/call.lua" "http://127.0.0.1:$port/v1/tools/echo/call" \
            | grep -E "Requests/sec|  50%|  99%|Non-2xx|status"
    done
done
