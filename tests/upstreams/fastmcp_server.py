#!/usr/bin/env python3
"""An MCP server written with the Python `mcp` SDK (FastMCP), run over stdio
as an upstream by the process-tool tests."""
import asyncio
import secrets
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


if __name__ == "__main__":
    mcp.run("stdio")
