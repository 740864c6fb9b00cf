"""A real MCP server, written with the official SDK, for the MCP tool-source tests.

Run it as ``python -m tests.support.mcp_math_server`` (stdio) or with ``--http PORT`` (streamable
HTTP on 127.0.0.1). Its tools:

- ``add(a, b)`` and ``echo(text)``: the plain calls the tests make;
- ``env_has(name)``: whether an environment variable reached the process (``env:`` of a stdio
  server config), without putting its value in any result;
- ``grow()``: registers ``multiply`` and sends ``notifications/tools/list_changed``, so a test
  can watch the client re-list;
- ``sleep(seconds)``: a call that outlasts a tool timeout;
- ``pid()``: the server's process id, so a test can kill it mid-conversation.

With ``MATH_REQUIRED_AUTH`` set, the HTTP server refuses (401) any request whose
``Authorization`` header differs from it: a test's configured ``headers:`` must arrive.
"""

from __future__ import annotations

import argparse
import os

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

server: MCPServer = MCPServer("math", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def env_has(name: str) -> bool:
    """Whether the environment variable ``name`` is set for this server."""
    return bool(os.environ.get(name))


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@server.tool()
async def grow(ctx: Context) -> str:
    """Add the ``multiply`` tool and tell the client its tool list changed."""
    if "multiply" not in {t.name for t in await server.list_tools()}:
        server.add_tool(multiply)
    await ctx.session.send_tool_list_changed()
    return "grown"


@server.tool()
def pid() -> int:
    """The server's process id (a test kills the server with it)."""
    return os.getpid()


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer: a call that can outlast the caller's timeout."""
    await anyio.sleep(seconds)
    return "slept"


class RequireAuthorization:
    """Answer 401 to an HTTP request without the expected ``Authorization`` header."""

    def __init__(self, app: ASGIApp, expected: str) -> None:
        self.app = app
        self.expected = expected.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != (
            self.expected
        ):
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    options = parser.parse_args()
    if options.http is None:
        server.run("stdio")
        return
    app: ASGIApp = server.streamable_http_app()
    required = os.environ.get("MATH_REQUIRED_AUTH")
    if required:
        app = RequireAuthorization(app, required)
    uvicorn.run(app, host="127.0.0.1", port=options.http, log_level="warning")


if __name__ == "__main__":
    main()
