#!/usr/bin/env bash
# Rate accuracy and isolation of [[clients]]: a client limited to 1000/s
# (burst 10) driven at 5000/s for 30 s (profiles/clients-rate.toml) gets
# its answered rate from the server's /metrics; a second, unlimited client
# at 2000/s (profiles/serve-rest.toml) is measured alone and beside it,
# interleaved, three rounds.
#
# On a machine of two vCPUs the generator sending 5000/s shares the
# server's CPUs and the measured client's generator: it is run twice per
# round, at normal priority (what this machine does) and under SCHED_IDLE
# (`chrt --idle 0`: it runs only on CPU time nobody else wants, as a client
# on another machine would), and the server's CPU time in each run (from
# /proc) tells what the refusals cost the server itself.
#   bash server/bench/clients_rate.sh target/release/toolplane target/release/loadgen
# Loopback only; a temporary data dir.
set -eu
bin=$1 loadgen=$2
rounds=${ROUNDS:-3}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
digest() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
cat > "$tmp/clients.toml" <<TOML
[[clients]]
name = "limited"
token_sha256 = "$(digest limited)"
tools = ["echo"]
rate = 1000
burst = 10

[[clients]]
name = "free"
token_sha256 = "$(digest free)"
tools = ["echo"]
metrics = true
TOML
url=http://127.0.0.1:7191
"$bin" serve --http 127.0.0.1:7191 --data "$tmp/d" --config "$tmp/clients.toml" 2>/dev/null &
server=$!
sleep 3
tck=$(getconf CLK_TCK)
# The server's CPU time so far (user + system), in seconds.
cpu() { awk -v t="$tck" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$server/stat"; }
count() { curl -s -H "Authorization: Bearer free" "$url/metrics" | awk -v r="$1" '$1 == "toolplane_client_calls_total{client=\"limited\",result=\"" r "\"}" {print $2}'; }
free() {
    local c0 c1
    c0=$(cpu)
    "$loadgen" run serve-rest --target "$url" --token free --rate 2k/s --duration 30s --warmup 2s 2>&1 | grep -E "^  corrected|^  rate"
    c1=$(cpu)
    awk -v a="$c0" -v b="$c1" 'BEGIN { printf "  server CPU %.2f s in the run\n", b - a }'
}
beside() {
    local ok0 no0 ok1 no1 limited
    ok0=$(count ok); ok0=${ok0:-0}
    no0=$(count rate_limited); no0=${no0:-0}
    "$@" "$loadgen" run clients-rate --target "$url" --token limited --warmup 2s > "$tmp/limited.log" 2>&1 &
    limited=$!
    free
    wait $limited || true
    ok1=$(count ok) no1=$(count rate_limited)
    # The measured 30 s after a 2 s warm-up: 32 s of schedule.
    awk -v a="$ok1" -v b="$ok0" -v c="$no1" -v d="$no0" 'BEGIN { printf "  limited client: %d answered in 32 s (%.1f/s), %d refused\n", a - b, (a - b) / 32, c - d }'
}
for r in $(seq "$rounds"); do
    echo "== round $r: the unlimited client alone"
    free
    echo "== round $r: beside the limited one at 5000/s"
    beside env
    echo "== round $r: beside the limited one at 5000/s, its generator under SCHED_IDLE"
    beside chrt --idle 0
done
