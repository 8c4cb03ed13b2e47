#!/usr/bin/env bash
# The peer comparison: hyper-mcp (from crates.io) serving an `echo` plugin
# built with the Extism PDK, against `toolplane serve`, both on MCP stdio,
# both driven by the same client (`compare mcp`) with the same
# `tools/call` load, interleaved.
#
#   bench/peers/run.sh [compare mcp flags, e.g. --calls 5000 --inflight 1,16]
#
# Installs and builds everything it needs from the package registries into
# $CARGO_TARGET_DIR/peers (default target/peers): hyper-mcp with
# `cargo install --locked`, the plugin for wasm32-wasip1 (the target the
# README's setup installs).
set -euo pipefail
cd "$(dirname "$0")/../.."

HYPER_MCP_VERSION=0.8.3
target=${CARGO_TARGET_DIR:-target}
peers="$target/peers"
mkdir -p "$peers"
peers=$(cd "$peers" && pwd)

./dev setup
if [[ "$("$peers/bin/hyper-mcp" --version 2>/dev/null | awk '{print $2}')" != "$HYPER_MCP_VERSION" ]]; then
    cargo install hyper-mcp --version "$HYPER_MCP_VERSION" --locked --root "$peers"
fi
cargo build --release --locked --target wasm32-wasip1 \
    --manifest-path bench/peers/echo-plugin/Cargo.toml \
    --target-dir "$peers/plugin-target"
plugin="$peers/plugin-target/wasm32-wasip1/release/echo_plugin.wasm"
cat > "$peers/hyper-mcp.json" <<JSON
{ "plugins": { "echo": { "url": "file://$plugin" } } }
JSON

# The same build as ./dev test, so nothing is compiled twice.
cargo test --workspace --release --no-run
"$target/release/compare" mcp \
    --server "toolplane serve=$target/release/toolplane serve --stdio" \
    --server "hyper-mcp $HYPER_MCP_VERSION=$peers/bin/hyper-mcp --config-file $peers/hyper-mcp.json" \
    "$@"
