#!/usr/bin/env python3
"""An MCP server written with the Python `mcp` SDK (FastMCP), run over stdio
as an upstream by the process-tool tests; with `--http PORT`, served over
streamable HTTP on 127.0.0.1:PORT/mcp, as a remote upstream (PORT 0: any
free port, printed as `listening on PORT` once bound); with `--require
HEADER=VALUE` too, a request without that header is answered 401."""
import asyncio
import secrets
import sys
import time

from mcp.server.fastmcp import Context, FastMCP

mcp = FastMCP("upstream")
# Which process answered: each is PID 1 of its own namespace.
WORKER = secrets.randbits(48)


@mcp.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@mcp.tool(structured_output=False)
def whoami() -> str:
    """Answers with this process's random id (unstructured text)."""
    return f"worker {WORKER}"


@mcp.tool()
async def slow(seconds: float) -> str:
    """Waits, then answers; a cancel ends it early."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@mcp.tool()
async def count(n: int, ctx: Context) -> int:
    """Reports progress n times (when the caller asked for it), back to
    back, then answers n."""
    for i in range(n):
        await ctx.report_progress(i + 1, n, f"step {i + 1} of {n}")
    return n


@mcp.tool()
async def freeze() -> str:
    """Blocks this process's event loop: it answers nothing, not even a
    ping. (Not SIGSTOP: the process is its PID namespace's init, which
    ignores signals it sends itself.)"""
    time.sleep(3600)
    return "unreachable"


@mcp.tool(structured_output=False)
def traced(ctx: Context) -> str:
    """Answers with the W3C trace context its request's `_meta` carried,
    and whether a progress token came beside it:
    `TRACEPARENT TRACESTATE PROGRESS` (`None` for one not sent)."""
    meta = ctx.request_context.meta
    extra = (meta.model_extra or {}) if meta is not None else {}
    progress = meta.progressToken is not None if meta is not None else False
    return f"{extra.get('traceparent')} {extra.get('tracestate')} {progress}"


@mcp.tool()
def fail(why: str) -> str:
    """Fails with `why` (a tool error, isError)."""
    raise ValueError(why)


@mcp.tool()
async def grow(name: str, ctx: Context) -> str:
    """Adds a tool `name` (answering its own name) and tells the client the
    list changed."""

    def new_tool() -> str:
        return name

    mcp.add_tool(new_tool, name=name, description=f"Added at run time: {name}")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


def serve_http(port: int, require: str | None) -> None:
    import socket

    import uvicorn
    from starlette.responses import PlainTextResponse

    app = mcp.streamable_http_app()
    if require:
        name, _, value = require.partition("=")
        inner = app

        async def app(scope, receive, send):  # noqa: F811
            if scope["type"] == "http":
                headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
                if headers.get(name.lower()) != value:
                    await PlainTextResponse("unauthorized", status_code=401)(scope, receive, send)
                    return
            await inner(scope, receive, send)

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--http"]:
        require = args[3] if args[2:3] == ["--require"] else None
        serve_http(int(args[1]), require)
    else:
        mcp.run("stdio")
