"""Interop: the Python MCP SDK (the `mcp` package) against `toolplane serve`,
over stdio (the binary as a child process) and over streamable HTTP.

    python tests/interop/mcp_python.py target/release/toolplane

Exits non-zero with the failing step named. `.ci/run` runs it in a venv
with a pinned `mcp`.
"""

import asyncio
import os
import re
import subprocess
import sys
import tempfile

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

SHA_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


async def script(session: ClientSession, transport: str) -> None:
    init = await session.initialize()
    assert init.server_info.name == "toolplane", init
    tools = (await session.list_tools()).tools
    names = {t.name for t in tools}
    assert {"echo", "hash.sha256", "fs.read", "fs.write", "sleep"} <= names, names
    sleep = next(t for t in tools if t.name == "sleep")
    assert sleep.input_schema["required"] == ["ms"], sleep.input_schema

    r = await session.call_tool("hash.sha256", {"data": "abc"})
    assert not r.is_error, r
    assert r.structured_content["sha256"] == SHA_ABC, r
    assert SHA_ABC in r.content[0].text, r

    r = await session.call_tool("sleep", {"ms": "x"})
    assert r.is_error, r
    assert "/ms" in r.content[0].text, r

    await session.send_ping()
    print(f"python mcp over {transport}: initialize, tools/list ({len(names)} tools), tools/call, isError, ping: ok")


async def over_stdio(binary: str, data: str) -> None:
    params = StdioServerParameters(
        command=binary, args=["serve", "--stdio", "--data", data], env=dict(os.environ)
    )
    async with stdio_client(params) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await script(session, "stdio")


async def over_http(binary: str, data: str) -> None:
    proc = subprocess.Popen(
        [binary, "serve", "--http", "127.0.0.1:0", "--data", data],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        for line in proc.stderr:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                url = m.group(1) + "/mcp"
                break
        assert url, "the server did not start listening"
        async with streamable_http_client(url) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await script(session, "streamable HTTP")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, f"exit {proc.returncode}"


def main() -> None:
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/toolplane"
    with tempfile.TemporaryDirectory() as data:
        asyncio.run(over_stdio(binary, data))
        asyncio.run(over_http(binary, data))


if __name__ == "__main__":
    main()
