"""Interop: the Python MCP SDK (the `mcp` package) against `toolplane serve`,
over stdio (the binary as a child process) and over streamable HTTP.

    python tests/interop/mcp_python.py target/release/toolplane

Exits non-zero with the failing step named. `.ci/run` runs it in a venv
per supported major of `mcp` (pinned: the current one and the previous
one), so the names that changed between them (`server_info` /
`serverInfo`, `input_schema` / `inputSchema`, `is_error` / `isError`, the
streamable HTTP client's name and what it yields) are read either way.
"""

import asyncio
import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared._httpx_utils import create_mcp_http_client
try:  # mcp 2.x
    from mcp.client.streamable_http import streamable_http_client as http_client
except ImportError:  # mcp 1.x
    from mcp.client.streamable_http import streamablehttp_client as http_client

SHA_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def attr(obj, snake: str, camel: str):
    """`obj.snake` (mcp 2.x) or `obj.camel` (mcp 1.x)."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


class Warnings(logging.Handler):
    """Collects the SDK's warnings (e.g. "Session termination failed: 202")."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


WARNINGS = Warnings()
logging.getLogger().addHandler(WARNINGS)


async def script(session: ClientSession, transport: str) -> None:
    init = await session.initialize()
    assert attr(init, "server_info", "serverInfo").name == "toolplane", init
    tools = (await session.list_tools()).tools
    names = {t.name for t in tools}
    # MCP names every client accepts: "." as "_".
    assert {"echo", "hash_sha256", "fs_read", "fs_write", "sleep"} <= names, names
    sleep = next(t for t in tools if t.name == "sleep")
    schema = attr(sleep, "input_schema", "inputSchema")
    assert schema["required"] == ["ms"], schema

    r = await session.call_tool("hash_sha256", {"data": "abc"})
    assert not attr(r, "is_error", "isError"), r
    assert attr(r, "structured_content", "structuredContent")["sha256"] == SHA_ABC, r
    assert SHA_ABC in r.content[0].text, r

    r = await session.call_tool("sleep", {"ms": "x"})
    assert attr(r, "is_error", "isError"), r
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


def start_http(binary: str, data: str, *extra: str) -> tuple[subprocess.Popen, str]:
    """`toolplane serve` on an ephemeral loopback port; its MCP URL."""
    proc = subprocess.Popen(
        [binary, "serve", "--http", "127.0.0.1:0", "--data", data, *extra],
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            return proc, m.group(1) + "/mcp"
    proc.kill()
    raise AssertionError("the server did not start listening")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)
    assert proc.returncode == 0, f"exit {proc.returncode}"


async def over_http(binary: str, data: str) -> None:
    proc, url = start_http(binary, data)
    try:
        async with http_client(url) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await script(session, "streamable HTTP")
    finally:
        stop(proc)
    failed = [w for w in WARNINGS.seen if "termination failed" in w]
    assert not failed, failed


def clients_config(path: str) -> None:
    """Two clients: `bot` may call echo and the hash tools, `ops` all."""
    entries = [("bot", "bot-token", '["echo", "hash.*"]'), ("ops", "ops-token", '["*"]')]
    with open(path, "w") as f:
        for name, token, tools in entries:
            digest = hashlib.sha256(token.encode()).hexdigest()
            f.write(f'[[clients]]\nname = "{name}"\ntoken_sha256 = "{digest}"\ntools = {tools}\n')


async def scoped(url: str, token: str, refusal: tuple[str, ...]) -> None:
    """The SDK's client with `token` as its bearer token lists exactly echo
    and hash_sha256, may call hash_sha256, and is refused sleep with one of
    the `refusal` words (a JSON-RPC error or an `isError` result for a
    client's token; for an access token without the scope, the step-up
    403 `insufficient_scope`, which each major raises its own way)."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http:
        async with http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                names = sorted(t.name for t in (await session.list_tools()).tools)
                assert names == ["echo", "hash_sha256"], names
                r = await session.call_tool("hash_sha256", {"data": "abc"})
                assert not attr(r, "is_error", "isError"), r
    refused = None
    try:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with http:
            async with http_client(url, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    r = await asyncio.wait_for(session.call_tool("sleep", {"ms": 1}), 10)
                    refused = r.content[0].text if attr(r, "is_error", "isError") else None
    except BaseException as e:  # a JSON-RPC error, or the 403 raised
        refused = repr(e)
    assert refused and any(w in refused for w in refusal), refused


async def unauthorized(url: str, token: str | None) -> None:
    """The SDK's client cannot even initialize with `token` (or none)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        http = create_mcp_http_client(headers=headers)
        async with http:
            async with http_client(url, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await asyncio.wait_for(session.initialize(), 10)
        raise AssertionError(f"initialize with token {token!r} succeeded")
    except AssertionError:
        raise
    except BaseException as e:  # each major surfaces the 401 its own way
        seen = repr(e)
        assert any(w in seen for w in ("401", "nauthorized", "error response")), seen


async def over_http_as_a_client(binary: str, data: str) -> None:
    """With [[clients]]: the SDK's client with a bearer token lists only
    its client's tools and is refused the others; without a token, or with
    a wrong one, it cannot connect."""
    config = os.path.join(data, "toolplane.toml")
    clients_config(config)
    proc, url = start_http(binary, data, "--config", config)
    try:
        await scoped(url, "bot-token", ("may not call tool",))
        await unauthorized(url, None)
        await unauthorized(url, "not-a-token")
        print("python mcp over streamable HTTP as a client: scoped tools/list, refused tools/call, 401 without a token: ok")
    finally:
        stop(proc)


async def over_http_with_an_access_token(binary: str, data: str) -> None:
    """With [oauth]: the SDK's client with a JWT access token (ES256, signed
    here by PyJWT, which both majors of `mcp` depend on, with a key made for
    this run) lists the tools its scope grants and is refused the others;
    an expired token, one for another audience and one signed by another
    key cannot connect."""
    import json
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    jwks = os.path.join(data, "jwks.json")
    with open(jwks, "w") as f:
        json.dump({"keys": [jwk]}, f)
    resource, issuer = "http://127.0.0.1/mcp", "https://auth.example.com"
    config = os.path.join(data, "oauth.toml")
    with open(config, "w") as f:
        f.write(
            f'[oauth]\nresource = "{resource}"\nauthorization_servers = ["{issuer}"]\n'
            f'jwks = "{jwks}"\nalgorithms = ["ES256"]\n'
            '[oauth.scopes]\n"tools.read" = ["echo", "hash.*"]\n"tools.all" = ["*"]\n'
        )

    def token(signer=key, **over) -> str:
        now = int(time.time())
        claims = {"iss": issuer, "aud": resource, "exp": now + 300, "iat": now,
                  "sub": "agent-7", "client_id": "bot", "scope": "tools.read"}
        claims.update(over)
        return jwt.encode(claims, signer, algorithm="ES256", headers={"kid": "k1"})

    proc, url = start_http(binary, data, "--config", config)
    try:
        await scoped(url, token(), ("needs a scope", "403 Forbidden"))
        await unauthorized(url, token(exp=int(time.time()) - 3600))
        await unauthorized(url, token(aud="https://elsewhere.example.com/mcp"))
        await unauthorized(url, token(signer=other))
        print("python mcp over streamable HTTP with a JWT access token: scoped tools/list, refused tools/call, "
              "expired/other audience/other key refused: ok")
    finally:
        stop(proc)


def main() -> None:
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/toolplane"
    with tempfile.TemporaryDirectory() as data:
        asyncio.run(over_stdio(binary, data))
        asyncio.run(over_http(binary, data))
        asyncio.run(over_http_as_a_client(binary, data))
        asyncio.run(over_http_with_an_access_token(binary, data))


if __name__ == "__main__":
    main()
