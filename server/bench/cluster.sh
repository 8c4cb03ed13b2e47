#!/usr/bin/env bash
# The latency the cluster path adds to a call, against the embedded engine,
# interleaved: one `toolplane serve` alone (embedded), and a cluster of two
# nodes on one nats-server (Debian's 2.9.10, file store, loopback), calls
# taken at node 1 and run on either. The same open-loop schedule of `echo`
# through the REST path of each in turn, ROUNDS rounds (default 3) of
# DURATION (default 20s) at RATE (default 2k/s), corrected percentiles:
#   bash server/bench/cluster.sh target/release/toolplane target/release/loadgen
# PROFILE (default serve-rest: keyless) picks the calls; keyed calls need a
# profile with [keys] cardinality > 0. After each round, the CPU time each
# process used in it (nats-server, node 1 taking the calls, node 2, the
# embedded server, loadgen) and, for the cluster, the stream's backlog
# drained before the next round starts (so that rounds do not overlap).
set -eu
bin=$1 loadgen=$2
rounds=${ROUNDS:-3} duration=${DURATION:-20s} rate=${RATE:-2k/s} profile=${PROFILE:-serve-rest}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cluster-bench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
nats-server -a 127.0.0.1 -p 7490 -js -sd "$tmp/nats" 2>"$tmp/nats.log" &
nats=$!
sleep 1
"$bin" serve --http 127.0.0.1:7491 --data "$tmp/d0" 2>/dev/null &
embedded=$!
"$bin" serve --http 127.0.0.1:7492 --data "$tmp/d1" --cluster nats://127.0.0.1:7490 --node n1 2>"$tmp/n1.log" &
n1=$!
sleep 1
"$bin" serve --http 127.0.0.1:7493 --data "$tmp/d2" --cluster nats://127.0.0.1:7490 --node n2 2>"$tmp/n2.log" &
n2=$!
sleep 3
# CPU seconds (user + system) a process has used.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# The CPU seconds process i of `before`/`after` used in a round.
d() { awk -v a="${before[$1]}" -v b="${after[$1]}" 'BEGIN { printf "%.1f", b - a }'; }
# Calls waiting or running in the cluster's stream.
backlog() {
    "$bin" cluster status --cluster nats://127.0.0.1:7490 --json \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"])'
}
grep -h "cluster: node" "$tmp"/n*.log
for ((r = 1; r <= rounds; r++)); do
    for side in embedded:7491 cluster:7492; do
        IFS=: read -r name port <<< "$side"
        echo "== round $r $name"
        before=($(cpu $nats) $(cpu $n1) $(cpu $n2) $(cpu $embedded))
        "$loadgen" run "$profile" --target "http://127.0.0.1:$port" \
            --rate "$rate" --duration "$duration" --warmup 3s --quiet 2>&1 \
            | grep -E "^  corrected|^  rate|^  rejected|p50 +p90|^    \[FAIL" || true
        after=($(cpu $nats) $(cpu $n1) $(cpu $n2) $(cpu $embedded))
        echo "  cpu s     nats-server $(d 0)  node1 $(d 1)  node2 $(d 2)  embedded $(d 3)"
        if [ "$name" = cluster ]; then
            left=$(backlog)
            echo "  backlog   $left calls in the stream when loadgen stopped"
            while [ "$(backlog)" != 0 ]; do sleep 1; done
        fi
    done
done
for port in 7492 7493; do
    curl -s "http://127.0.0.1:$port/metrics" | awk -v p="$port" '/^toolplane_cluster_(published|pulled|redelivered|duplicates_suppressed|no_answer|refused)_total/ {print p": "$0}'
done
