#!/usr/bin/env bash
# The MCP conformance suite against `toolplane serve`'s /mcp:
#   bash tests/conformance/run.sh [path/to/toolplane]
# The suite (@modelcontextprotocol/conformance) and the Node 22 it needs
# (npm's `node` package) are pinned in package-lock.json and installed
# here with `npm ci`. The server serves the built-in tools plus the two
# fixtures in tools/ that the tools-call scenarios call by name. Every
# active server scenario runs; the ones that do not apply to a tools-only
# server are listed, each with its reason, in not-applicable.yml, and the
# suite fails both on a new failure and on a listed scenario that passes.
set -euo pipefail
bin=$(realpath "${1:-target/release/toolplane}")
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
node=$here/node_modules/.bin/node
"$node" --version
data=$(mktemp -d)
log=$(mktemp)
"$bin" serve --http 127.0.0.1:0 --tools "$here/tools" --data "$data" 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data" "$log"' EXIT
url=
for _ in $(seq 1 600); do
    url=$(grep -o 'listening on http://[^ ]*' "$log" | head -n1 | sed 's/^listening on //' || true)
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "conformance: toolplane serve exited" >&2; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { cat "$log"; echo "conformance: toolplane serve did not listen" >&2; exit 1; }
"$node" node_modules/@modelcontextprotocol/conformance/dist/index.js server \
    --url "$url/mcp" --expected-failures "$here/not-applicable.yml"
