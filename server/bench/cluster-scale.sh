#!/usr/bin/env bash
# CPU-heavy calls through a cluster of one node, then of two, each node
# pinned to its own core (taskset): `hash.sha256` with ROUNDS rounds
# (default 20000), keyless, taken at node 1 by wrk (closed loop,
# CONNECTIONS connections, default 8) for DURATION (default 15s), REPEAT
# times each (default 3), interleaved. nats-server (Debian's 2.9.10, file
# store, loopback) and wrk are not pinned. Each node pulls at most KEYLESS
# keyless calls at once (default 2: `[cluster] max_inflight` = the 64
# partitions + KEYLESS), so that a node with one core does not take calls
# it can only queue while the other idles.
#   bash server/bench/cluster-scale.sh target/release/toolplane
# The machine's own ceiling comes first in each round, as the baseline:
# one `toolplane serve` without a cluster on core 0, then on cores 0 and 1
# (its engine runs a worker per core it may use).
# Needs wrk (apt-get install wrk) and two cores.
set -eu
bin=$1
keyless=${KEYLESS:-2} rounds=${ROUNDS:-20000} duration=${DURATION:-15s} repeat=${REPEAT:-3} conns=${CONNECTIONS:-8}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cluster-scale.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
cat > "$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"data":"toolplane","rounds":$rounds}'
wrk.headers["Content-Type"] = "application/json"
LUA
for n in n1 n2; do
    printf '[cluster]\nnats = "nats://127.0.0.1:7490"\nnode = "%s"\nmax_inflight = %d\n' "$n" $((64 + keyless)) > "$tmp/$n.toml"
done
nats-server -a 127.0.0.1 -p 7490 -js -sd "$tmp/nats" 2>"$tmp/nats.log" &
sleep 1
taskset -c 0 "$bin" serve --http 127.0.0.1:7492 --data "$tmp/d1" --config "$tmp/n1.toml" 2>"$tmp/n1.log" &
sleep 3
n2=
for ((r = 1; r <= repeat; r++)); do
    for cores in 0 0,1; do
        taskset -c "$cores" "$bin" serve --http 127.0.0.1:7491 --data "$tmp/d0" 2>/dev/null &
        alone=$!
        sleep 2
        echo "== round $r, one server alone on core(s) $cores"
        wrk -t 1 -c "$conns" -d "$duration" -s "$tmp/post.lua" http://127.0.0.1:7491/v1/tools/hash.sha256/call \
            | grep -E "Requests/sec|Latency|Non-2xx" || true
        kill -TERM "$alone"
        wait "$alone" 2>/dev/null || true
    done
    for nodes in 1 2; do
        if [ "$nodes" = 2 ]; then
            taskset -c 1 "$bin" serve --http 127.0.0.1:7493 --data "$tmp/d2" --config "$tmp/n2.toml" 2>"$tmp/n2.log" &
            n2=$!
            sleep 3
        fi
        echo "== round $r, $nodes node(s)"
        wrk -t 1 -c "$conns" -d "$duration" -s "$tmp/post.lua" http://127.0.0.1:7492/v1/tools/hash.sha256/call \
            | grep -E "Requests/sec|Latency|Non-2xx" || true
        if [ -n "$n2" ]; then
            # A clean stop: what it holds goes back to the stream.
            kill -TERM "$n2"
            wait "$n2" 2>/dev/null || true
            n2=
            sleep 1
        fi
    done
done
