#!/usr/bin/env bash
# What [audit] costs a REST echo call: three servers up at once (no audit
# log, durability = "async", durability = "before-answer", each log in a
# temporary directory on the data disk), measured in turn, three rounds:
#  - calls/s at saturation: wrk, 64 keep-alive connections, 10 s
#    (server/bench/call.lua);
#  - latency at a fixed rate: loadgen's serve-rest profile at 2000 calls/s
#    for 20 s (open loop, corrected), p50 and p99.
#   bash server/bench/audit.sh target/release/toolplane target/release/loadgen
# Loopback only. AUDIT_DIR puts the logs on another disk (default: $TMPDIR).
set -eu
bin=$1 loadgen=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${AUDIT_DIR:-${TMPDIR:-/tmp}}/audit-bench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
: > "$tmp/off.toml"
printf '[audit]\ndir = "async"\n' > "$tmp/async.toml"
printf '[audit]\ndir = "before"\ndurability = "before-answer"\n' > "$tmp/before.toml"
"$bin" serve --http 127.0.0.1:7281 --data "$tmp/d0" --config "$tmp/off.toml" 2>/dev/null &
"$bin" serve --http 127.0.0.1:7282 --data "$tmp/d1" --config "$tmp/async.toml" 2>/dev/null &
"$bin" serve --http 127.0.0.1:7283 --data "$tmp/d2" --config "$tmp/before.toml" 2>/dev/null &
sleep 3
df -h "$tmp" | tail -1
for r in 1 2 3; do
    for side in off:7281 async:7282 before-answer:7283; do
        IFS=: read -r name port <<< "$side"
        echo "== round $r $name"
        wrk -t1 -c64 -d10s --latency -s "$here/call.lua" "http://127.0.0.1:$port/v1/tools/echo/call" \
            | grep -E "Requests/sec|  50%|  99%|status"
        "$loadgen" run serve-rest --target "http://127.0.0.1:$port" --rate 2k/s --duration 20s --warmup 2s 2>&1 \
            | grep -E "^  corrected|^  rate"
    done
done
for side in off:7281 async:7282 before-answer:7283; do
    IFS=: read -r name port <<< "$side"
    curl -s "http://127.0.0.1:$port/metrics" | awk -v n="$name" '/^toolplane_audit_(records|batches|dropped|errors)_total|^toolplane_audit_sync_seconds_total/ {print n": "$0}'
done
