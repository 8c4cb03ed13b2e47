#!/usr/bin/env bash
# soak-10k through the REST path with the observing parts on and off:
#  - off:    no client list, no audit log, no traces;
#  - async:  a client list (the call's token checked, its scope, rate and
#            slots), [audit] durability = "async", OTLP traces exported to
#            a sink (server/bench/otlp_sink.py) with the default sampling
#            (one call in 100);
#  - before: the same with durability = "before-answer".
# Three servers up at once, measured in turn, ROUNDS rounds (default 3) of
# DURATION (default 60s) each, open loop, corrected percentiles:
#   bash server/bench/observed.sh target/release/toolplane target/release/loadgen
# Loopback only; the audit logs in a temporary directory on the data disk
# (AUDIT_DIR: elsewhere). SAMPLER=always_on samples every call instead.
set -eu
bin=$1 loadgen=$2
rounds=${ROUNDS:-3} duration=${DURATION:-60s}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${AUDIT_DIR:-${TMPDIR:-/tmp}}/observed-bench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
token=bench-token
client=$(printf '[[clients]]\nname = "bench"\ntoken_sha256 = "%s"\ntools = ["*"]\nrate = "1000000/s"\nmax_inflight = 100000\nmetrics = true\n' \
    "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)")
: > "$tmp/off.toml"
printf '%s\n[audit]\ndir = "%s/async"\n' "$client" "$tmp" > "$tmp/async.toml"
printf '%s\n[audit]\ndir = "%s/before"\ndurability = "before-answer"\n' "$client" "$tmp" > "$tmp/before.toml"
python3 "$here/otlp_sink.py" 7390 &
sink=$!
otel=(env OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:7390)
if [ -n "${SAMPLER:-}" ]; then otel+=("OTEL_TRACES_SAMPLER=$SAMPLER"); fi
"$bin" serve --http 127.0.0.1:7391 --data "$tmp/d0" --config "$tmp/off.toml" 2>/dev/null &
"${otel[@]}" "$bin" serve --http 127.0.0.1:7392 --data "$tmp/d1" --config "$tmp/async.toml" 2>/dev/null &
"${otel[@]}" "$bin" serve --http 127.0.0.1:7393 --data "$tmp/d2" --config "$tmp/before.toml" 2>/dev/null &
sleep 3
df -h "$tmp" | tail -1
for ((r = 1; r <= rounds; r++)); do
    for side in off:7391:- async:7392:$token before:7393:$token; do
        IFS=: read -r name port tok <<< "$side"
        auth=()
        if [ "$tok" != - ]; then auth=(--token "$tok"); fi
        echo "== round $r $name"
        "$loadgen" run soak-10k --target "http://127.0.0.1:$port" "${auth[@]}" \
            --rate "${RATE:-10k/s}" --duration "$duration" --warmup 10s --quiet 2>&1 | grep -E "^  corrected|^  rate|^  rejected|^  latency|p50 +p90|^    \[FAIL" || true
    done
done
for side in async:7392 before:7393; do
    IFS=: read -r name port <<< "$side"
    curl -s -H "authorization: Bearer $token" "http://127.0.0.1:$port/metrics" \
        | awk -v n="$name" '/^toolplane_audit_(records|batches|dropped|errors)_total|^toolplane_audit_sync_seconds_total|^toolplane_trace_spans_(exported|failed)_total/ {print n": "$0}'
done
kill -TERM "$sink"
wait "$sink" 2>/dev/null || true
