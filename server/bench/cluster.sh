#!/usr/bin/env bash
# The latency the cluster path adds to a call, against the embedded engine,
# interleaved: one `toolplane serve` alone (embedded), and a cluster of two
# nodes on one nats-server (Debian's 2.9.10, file store, loopback), calls
# taken at node 1 and run on either. The same open-loop schedule of `echo`
# through the REST path of each in turn, ROUNDS rounds (default 3) of
# DURATION (default 20s) at RATE (default 2k/s), corrected percentiles:
#   bash server/bench/cluster.sh target/release/toolplane target/release/loadgen
# PROFILE (default serve-rest: keyless) picks the calls; keyed calls need a
# profile with [keys] cardinality > 0.
set -eu
bin=$1 loadgen=$2
rounds=${ROUNDS:-3} duration=${DURATION:-20s} rate=${RATE:-2k/s} profile=${PROFILE:-serve-rest}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cluster-bench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
nats-server -a 127.0.0.1 -p 7490 -js -sd "$tmp/nats" 2>"$tmp/nats.log" &
sleep 1
"$bin" serve --http 127.0.0.1:7491 --data "$tmp/d0" 2>/dev/null &
"$bin" serve --http 127.0.0.1:7492 --data "$tmp/d1" --cluster nats://127.0.0.1:7490 --node n1 2>"$tmp/n1.log" &
sleep 1
"$bin" serve --http 127.0.0.1:7493 --data "$tmp/d2" --cluster nats://127.0.0.1:7490 --node n2 2>"$tmp/n2.log" &
sleep 3
grep -h "cluster: node" "$tmp"/n*.log
for ((r = 1; r <= rounds; r++)); do
    for side in embedded:7491 cluster:7492; do
        IFS=: read -r name port <<< "$side"
        echo "== round $r $name"
        "$loadgen" run "$profile" --target "http://127.0.0.1:$port" \
            --rate "$rate" --duration "$duration" --warmup 3s --quiet 2>&1 \
            | grep -E "^  corrected|^  rate|^  rejected|p50 +p90|^    \[FAIL" || true
    done
done
for port in 7492 7493; do
    curl -s "http://127.0.0.1:$port/metrics" | awk -v p="$port" '/^toolplane_cluster_(published|pulled|redelivered|duplicates_suppressed|no_answer|refused)_total/ {print p": "$0}'
done
