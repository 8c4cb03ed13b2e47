#!/usr/bin/env bash
# REST echo calls/s with no client list, 1 client and 1000 clients
# configured, interleaved, three rounds of 10 s each (wrk, 64 keep-alive
# connections, server/bench/call.lua). Each client has a scope of a name
# and a glob, a rate it never reaches and slots it never fills, so the
# whole check (token, scope, rate, slot) runs on every call.
#   bash server/bench/clients.sh target/release/toolplane
# Loopback only; each server with its defaults and a temporary data dir.
set -eu
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
list() {
    local n=$1 out=$2 i
    : > "$out"
    for ((i = 0; i < n; i++)); do
        printf '[[clients]]\nname = "c%d"\ntoken_sha256 = "%s"\ntools = ["echo", "hash.*"]\nrate = 1000000000\nburst = 4000000000\nmax_inflight = 100000\n' \
            "$i" "$(printf 'token-%d' "$i" | sha256sum | cut -d' ' -f1)" >> "$out"
    done
}
list 1 "$tmp/one.toml"
list 1000 "$tmp/thousand.toml"
: > "$tmp/none.toml"
"$bin" serve --http 127.0.0.1:7181 --data "$tmp/d0" --config "$tmp/none.toml" 2>/dev/null &
"$bin" serve --http 127.0.0.1:7182 --data "$tmp/d1" --config "$tmp/one.toml" 2>/dev/null &
"$bin" serve --http 127.0.0.1:7183 --data "$tmp/d2" --config "$tmp/thousand.toml" 2>/dev/null &
sleep 3
for r in 1 2 3; do
    for side in none:7181:- one:7182:token-0 thousand:7183:token-500; do
        IFS=: read -r name port token <<< "$side"
        auth=()
        [[ $token != - ]] && auth=(-H "Authorization: Bearer $token")
        echo "== round $r $name"
        wrk -t1 -c64 -d10s --latency "${auth[@]}" -s "$here/call.lua" "http://127.0.0.1:$port/v1/tools/echo/call" \
            | grep -E "Requests/sec|  50%|  99%|status"
    done
done
