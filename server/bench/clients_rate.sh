#!/usr/bin/env bash
# Rate accuracy and isolation of [[clients]]: a client limited to 1000/s
# (burst 10) driven at 5000/s for 30 s (profiles/clients-rate.toml) gets
# its answered rate from the server's /metrics; a second, unlimited client
# at 2000/s (profiles/serve-rest.toml) is measured alone and beside it,
# interleaved, three rounds.
#   bash server/bench/clients_rate.sh target/release/toolplane target/release/loadgen
# Loopback only; a temporary data dir.
set -eu
bin=$1 loadgen=$2
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
sleep 3
ok() { curl -s -H "Authorization: Bearer free" "$url/metrics" | awk '/^toolplane_client_calls_total\{client="limited",result="ok"\}/ {print $2}'; }
free() { "$loadgen" run serve-rest --target "$url" --token free --rate 2k/s --duration 30s --warmup 2s 2>&1 | grep -E "^  corrected|^  rate"; }
for r in 1 2 3; do
    echo "== round $r: the unlimited client alone"
    free
    echo "== round $r: beside the limited one at 5000/s"
    before=$(ok); before=${before:-0}
    "$loadgen" run clients-rate --target "$url" --token limited --warmup 2s > "$tmp/limited.log" 2>&1 &
    limited=$!
    free
    wait $limited || true
    after=$(ok)
    # The measured 30 s after a 2 s warm-up: 32 s of schedule.
    awk -v a="$after" -v b="$before" 'BEGIN { printf "limited client answered %d calls in 32 s: %.1f/s\n", a - b, (a - b) / 32 }'
done
