#!/usr/bin/env bash
# Installs the real MCP servers the process-tool tests run as upstreams,
# pinned: the npm packages of tests/upstreams/package-lock.json (npm ci),
# and the Python `mcp` SDK (for tests/upstreams/fastmcp_server.py) in
# target/interop-venv-$MCP_PY, the venv CI's interop step uses too.
# Idempotent: seconds when everything is there already.
set -euo pipefail
cd "$(dirname "$0")/../.."

# FastMCP is the 1.x API (2.x renamed it MCPServer); CI tests both majors
# against the server, and this one is the upstream the tests run.
MCP_PY=1.30.0
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "tests/upstreams/setup.sh: Node.js and npm are needed (Node 20 or later)" >&2
    exit 2
fi
stamp=tests/upstreams/node_modules/.installed-lock
if ! cmp -s tests/upstreams/package-lock.json "$stamp" 2>/dev/null; then
    npm ci --prefix tests/upstreams --no-audit --no-fund --loglevel=error
    cp tests/upstreams/package-lock.json "$stamp"
fi
venv=target/interop-venv-$MCP_PY
if ! "$venv/bin/python" -c "import mcp.server.fastmcp" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_PY"
fi
