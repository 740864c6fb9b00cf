"""MCP servers as tool sources: their tools offered to the model as ``<server>__<tool>``.

A profile lists MCP servers under ``mcp_servers:``; each is run over stdio (``command``) or
reached over streamable HTTP (``url``) through the official ``mcp`` SDK client. The server
process owns the connections, not the conversations: an ``McpPool`` (created by the app's
lifespan and handed to the ``EngineBuilder``) keeps one ``McpConnection`` per server config,
opened on first use and shared by every conversation whose profile names that server.

Each connection lives in one dedicated owner task. The SDK's transports and ``ClientSession``
are anyio context managers with task groups inside, which must be entered and exited in the
same task; conversations only send requests over the session the owner holds. The owner
re-lists tools when the server sends ``notifications/tools/list_changed``, pings an idle
server, and reconnects with exponential backoff when the server dies. A call while the server
is down fails at once with a ``ToolError`` (the model reads it, the run goes on) instead of
waiting for the outage to end; the tool loop's per-tool timeout bounds every call.

Values under ``env`` (stdio) and ``headers`` (HTTP) are treated as secrets: they are
``SecretStr`` in memory, never logged, never returned by the API, and only fingerprinted in an
engine signature (``public_dict``). The SDK is imported when the first connection opens, so a
server without MCP profiles does not pay for importing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
)

import webchat
from webchat.engines.base import ToolDefinition
from webchat.tools.registry import Tool, ToolArgumentsError, ToolError, ToolRegistry

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp.types import CallToolResult

log = logging.getLogger("webchat.mcp")

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What OpenAI and Anthropic both accept as a tool name."""

SEPARATOR = "__"
"""Between the server name and the tool name: ``math__add``."""

_SERVER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"

ConnectionState = Literal["idle", "connecting", "connected", "down", "closed"]


# -- configuration (profile key ``mcp_servers:``) ------------------------------------------


class _McpServerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_SERVER_NAME, description="prefix of the tool names: <name>__<tool>")
    tools: tuple[str, ...] | None = Field(
        default=None, description="allow-list of the server's own tool names (default: all)"
    )

    @field_validator("name")
    @classmethod
    def _no_separator(cls, value: str) -> str:
        # ``<server>__<tool>`` must say unambiguously where the server name ends.
        if SEPARATOR in value:
            raise ValueError(f"an MCP server name cannot contain {SEPARATOR!r}")
        return value

    def _secret_fields(self) -> dict[str, dict[str, SecretStr]]:
        return {}

    def public_dict(self, fingerprint: Callable[[str], str]) -> dict[str, Any]:
        """The config as JSON data, each secret replaced by ``fingerprint(secret)``.

        The fingerprint function comes from the caller (the engine signature's), so the format
        of fingerprints is defined in one place.
        """
        data: dict[str, Any] = self.model_dump(mode="json")
        for field, secrets in self._secret_fields().items():
            data[field] = {k: fingerprint(v.get_secret_value()) for k, v in secrets.items()}
        return data

    def connection_key(self) -> str:
        """Identity of the connection: everything but the allow-list, secrets included.

        Two profiles naming the same server share one connection even with different
        allow-lists; a rotated secret is another connection. A full digest, never shown.
        """
        data: dict[str, Any] = self.model_dump(mode="json", exclude={"tools"})
        for field, secrets in self._secret_fields().items():
            data[field] = {k: v.get_secret_value() for k, v in secrets.items()}
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _scalars_as_text(value: Any) -> Any:
    # YAML reads ``PORT: 8080`` as a number; an environment or a header is text either way.
    if isinstance(value, dict):
        return {k: _scalar_text(v) for k, v in value.items()}
    return value


def _scalar_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


class McpStdioServer(_McpServerBase):
    """An MCP server the webchat process starts as a subprocess and talks to over stdio."""

    command: str = Field(min_length=1)
    args: tuple[str, ...] = ()
    env: dict[str, SecretStr] = Field(
        default_factory=dict, description="added to a minimal inherited environment (secrets)"
    )
    cwd: str | None = Field(default=None, description="relative to webchat's working directory")

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_text(cls, value: Any) -> Any:
        return _scalars_as_text(value)

    def _secret_fields(self) -> dict[str, dict[str, SecretStr]]:
        return {"env": self.env}


class McpHttpServer(_McpServerBase):
    """An MCP server reached over streamable HTTP."""

    url: str = Field(pattern=r"^https?://", description="the MCP endpoint, e.g. http://host/mcp")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="sent with every request (secrets)"
    )

    @field_validator("headers", mode="before")
    @classmethod
    def _headers_as_text(cls, value: Any) -> Any:
        return _scalars_as_text(value)

    def _secret_fields(self) -> dict[str, dict[str, SecretStr]]:
        return {"headers": self.headers}


def _server_kind(value: Any) -> str:
    if isinstance(value, McpHttpServer):
        return "http"
    if isinstance(value, dict) and "url" in value:
        return "http"
    return "stdio"


McpServerConfig = Annotated[
    Annotated[McpStdioServer, Tag("stdio")] | Annotated[McpHttpServer, Tag("http")],
    Discriminator(_server_kind),
]
"""One entry of ``mcp_servers:``: stdio when it has ``command``, HTTP when it has ``url``."""


def _unique_names(servers: list[McpStdioServer | McpHttpServer]) -> list[Any]:
    names = [s.name for s in servers]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"MCP server names must be unique in a profile; repeated: {repeated}")
    return servers


McpServers = Annotated[list[McpServerConfig], AfterValidator(_unique_names)]
"""The ``mcp_servers:`` key of a profile."""


def mcp_tool_name(server: str, tool: str) -> str:
    """The name a model sees for ``tool`` of ``server``: ``<server>__<tool>``, made valid.

    MCP allows characters (``.``, ``/``) and lengths that provider APIs reject, so anything
    outside ``[a-zA-Z0-9_-]`` becomes ``_`` and a name over 64 characters is cut and made
    unique again with a short digest of the original.
    """
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", f"{server}{SEPARATOR}{tool}")
    if len(name) > 64:
        digest = hashlib.sha256(tool.encode("utf-8")).hexdigest()[:8]
        name = f"{name[:55]}_{digest}"
    return name


# -- tools ------------------------------------------------------------------------------


class _AnyArguments(BaseModel):
    model_config = ConfigDict(extra="allow")


class McpTool(Tool):
    """A tool of an MCP server: its schema comes from the server, its calls go to it.

    ``Tool.__init__`` derives a schema from a Python signature; here the server's
    ``inputSchema`` is the schema and the server validates the arguments, so only the shape
    (a JSON object) is checked locally.
    """

    def __init__(
        self, connection: McpConnection, remote_name: str, description: str, schema: dict[str, Any]
    ) -> None:
        self.connection = connection
        self.remote_name = remote_name
        self.name = mcp_tool_name(connection.config.name, remote_name)
        self.description = description
        self.function = self.call
        self.arguments_model = _AnyArguments
        self.is_async = True
        parameters = dict(schema) or {"type": "object", "properties": {}}
        parameters.pop("title", None)
        self.definition = ToolDefinition(
            name=self.name, description=description, parameters=parameters
        )

    def validate(self, arguments: Any) -> dict[str, Any]:
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise ToolArgumentsError(f"arguments are not valid JSON: {exc}") from exc
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ToolArgumentsError("arguments must be a JSON object")
        return arguments

    async def call(self, arguments: Any) -> Any:
        return await self.connection.call(self.remote_name, self.validate(arguments))


class McpToolRegistry(ToolRegistry):
    """Registered tools plus the live tools of MCP connections.

    The MCP part is read at each look-up, so a re-listing (``list_changed``, a reconnect)
    shows in the next run's offered tools without rebuilding the engine. A registered tool
    wins over an MCP tool of the same name.
    """

    def __init__(
        self,
        tools: Iterable[Tool] = (),
        sources: Iterable[tuple[McpConnection, Iterable[str] | None]] = (),
    ) -> None:
        super().__init__(tools)
        self.sources = tuple(
            (connection, None if allow is None else frozenset(allow))
            for connection, allow in sources
        )

    async def prepare(self) -> None:
        """Open the connections (first use) and wait, bounded, for their first listing."""
        await asyncio.gather(*(connection.ready() for connection, _ in self.sources))

    def mcp_tools(self) -> dict[str, McpTool]:
        found: dict[str, McpTool] = {}
        for connection, allow in self.sources:
            for name, mcp_tool in connection.tools.items():
                if allow is not None and mcp_tool.remote_name not in allow:
                    continue
                if name not in found and super().get(name) is None:
                    found[name] = mcp_tool
        return found

    def get(self, name: str) -> Tool | None:
        return super().get(name) or self.mcp_tools().get(name)

    def names(self) -> list[str]:
        return [*super().names(), *self.mcp_tools()]

    def definitions(self, allowed: Iterable[str] | None = None) -> list[ToolDefinition]:
        keep = None if allowed is None else set(allowed)
        live = [
            t.definition for name, t in self.mcp_tools().items() if keep is None or name in keep
        ]
        return [*super().definitions(keep), *live]

    def __contains__(self, name: object) -> bool:
        return self.get(name) is not None if isinstance(name, str) else False

    def __len__(self) -> int:
        return len(self.names())


# -- connections ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class McpPoolSettings:
    connect_timeout: float = 30.0
    """Seconds for a connection's handshake and listing (a stdio server may start slowly)."""
    first_use_wait: float = 10.0
    """Seconds the first run waits for that; past it, the run goes on without those tools."""
    heartbeat: float = 15.0
    """Seconds of silence after which the owner pings the server to notice it died."""
    backoff_initial: float = 0.25
    """First delay before reconnecting; doubled after each failed attempt."""
    backoff_max: float = 15.0
    close_timeout: float = 10.0
    """Seconds ``aclose`` waits for a connection to wind down before cancelling harder."""


class McpConnection:
    """One MCP server, connected by its owner task; shared by every conversation using it."""

    def __init__(self, config: McpStdioServer | McpHttpServer, settings: McpPoolSettings) -> None:
        self.config = config
        self.settings = settings
        self.state: ConnectionState = "idle"
        self.generation = 0
        """Successful connections so far (1 after the first, 2 after a reconnect, ...)."""
        self.listings = 0
        """Tool listings so far (each connect, each ``list_changed``)."""
        self.last_error: str | None = None
        self._tools: dict[str, McpTool] = {}
        self._session: ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._scope: anyio.CancelScope | None = None
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._relist = False
        self._broken: str | None = None
        self._closing = False

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tools(self) -> dict[str, McpTool]:
        """The server's tools by model-facing name, as last listed (kept during an outage)."""
        return self._tools

    @property
    def connected(self) -> bool:
        return self._session is not None and self._broken is None

    def start(self) -> None:
        """Start the owner task, once; it connects in the background."""
        if self._task is None and not self._closing:
            self.state = "connecting"
            # A fresh context: the owner outlives the run that happened to open it.
            self._task = asyncio.create_task(
                self._own(), name=f"mcp:{self.name}", context=contextvars.Context()
            )

    async def ready(self) -> None:
        """Start if needed, then wait until the first attempt has settled (bounded).

        Later runs never wait here: during an outage the last listing is offered and calls
        fail fast, so a dead server costs a tool error, not a stalled run.
        """
        self.start()
        if not self._settled.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.first_use_wait):
                    await self._settled.wait()

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call ``tool`` on the server; every failure is a ``ToolError`` the model can read."""
        from mcp.shared.exceptions import MCPError
        from mcp.types import CONNECTION_CLOSED

        session = self._session
        if session is None or self._broken is not None:
            raise ToolError(self._unavailable())
        try:
            result = await session.call_tool(tool, arguments)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._mark_broken(session, "connection closed")
                raise ToolError(self._unavailable()) from None
            raise ToolError(f"MCP server {self.name!r}: {exc.message}") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            self._mark_broken(session, _describe(exc))
            raise ToolError(self._unavailable()) from None
        return _result_value(result)

    async def aclose(self) -> None:
        """Close the connection (stdio: the server process ends) and await the owner task."""
        self._closing = True
        task = self._task
        if task is None:
            self.state = "closed"
            return
        if self._scope is not None:
            self._scope.cancel()
        else:
            task.cancel()  # not started yet: nothing is open
        done, _ = await asyncio.wait({task}, timeout=self.settings.close_timeout)
        if not done:
            log.warning("MCP server %r did not close in time; cancelling", self.name)
            task.cancel()
            await asyncio.wait({task})
        error = None if task.cancelled() else task.exception()
        if error is not None:  # shutdown goes on for the other connections and the app
            log.warning("MCP server %r closed with an error: %s", self.name, _describe(error))
        self.state = "closed"

    # -- the owner task ------------------------------------------------------------------

    async def _own(self) -> None:
        delay = self.settings.backoff_initial
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                while True:
                    self.state = "connecting"
                    before = self.generation
                    try:
                        await self._session_once()
                    except Exception as exc:
                        self.last_error = _describe(exc)
                    if self.generation > before:
                        delay = self.settings.backoff_initial
                    self.state = "down"
                    self._settled.set()
                    log.warning(
                        "MCP server %r unavailable (%s); reconnecting in %.2gs",
                        self.name,
                        self.last_error,
                        delay,
                    )
                    await anyio.sleep(delay)
                    delay = min(delay * 2, self.settings.backoff_max)
        finally:
            self._session = None
            self._settled.set()
            self.state = "closed"

    async def _session_once(self) -> None:
        """Connect, list, then serve until the connection breaks (returns or raises)."""
        from mcp import ClientSession
        from mcp.types import Implementation

        async with contextlib.AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport(stack))
            session = await stack.enter_async_context(
                ClientSession(
                    read,
                    write,
                    message_handler=self._on_message,
                    client_info=Implementation(name="webchat", version=webchat.__version__),
                )
            )
            with anyio.fail_after(self.settings.connect_timeout):
                await session.initialize()
                await self._list(session)
            self._broken = None
            self._relist = False
            self._session = session
            self.generation += 1
            self.last_error = None
            self.state = "connected"
            self._settled.set()
            log.info("MCP server %r connected: %d tools", self.name, len(self._tools))
            try:
                await self._serve(session)
            finally:
                self._session = None
                self.state = "down"

    def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        config = self.config
        if isinstance(config, McpHttpServer):
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            # The SDK's recommended timeouts: a server may hold a response stream open.
            client = httpx2.AsyncClient(
                headers={k: v.get_secret_value() for k, v in config.headers.items()},
                timeout=httpx2.Timeout(30.0, read=300.0),
            )
            stack.push_async_callback(client.aclose)
            return streamable_http_client(config.url, http_client=client)
        from mcp.client.stdio import StdioServerParameters, stdio_client

        return stdio_client(
            StdioServerParameters(
                command=config.command,
                args=list(config.args),
                env={k: v.get_secret_value() for k, v in config.env.items()},
                cwd=config.cwd,
            )
        )

    async def _serve(self, session: ClientSession) -> None:
        while True:
            if self._broken is not None:
                self.last_error = self._broken
                return
            if self._relist:
                self._relist = False
                with anyio.fail_after(self.settings.connect_timeout):
                    await self._list(session)
                log.info("MCP server %r re-listed: %d tools", self.name, len(self._tools))
            with anyio.move_on_after(self.settings.heartbeat) as idle:
                await self._wake.wait()
            self._wake.clear()
            if idle.cancelled_caught:
                with anyio.fail_after(self.settings.connect_timeout):
                    await session.send_ping()

    async def _list(self, session: ClientSession) -> None:
        from mcp.types import PaginatedRequestParams

        listed = []
        cursor: str | None = None
        while True:
            params = None if cursor is None else PaginatedRequestParams(cursor=cursor)
            page = await session.list_tools(params=params)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        tools: dict[str, McpTool] = {}
        for remote in listed:
            made = McpTool(
                self, remote.name, remote.description or remote.title or "", remote.input_schema
            )
            if made.name in tools:
                log.warning("MCP server %r: tool name %r is taken; skipped", self.name, made.name)
                continue
            tools[made.name] = made
        self._tools = tools
        self.listings += 1

    async def _on_message(self, message: Any) -> None:
        from mcp.types import ToolListChangedNotification

        if isinstance(message, ToolListChangedNotification):
            self._relist = True
            self._wake.set()
        elif isinstance(message, Exception):
            log.debug("MCP server %r transport: %s", self.name, type(message).__name__)

    def _mark_broken(self, session: ClientSession, reason: str) -> None:
        # Only the session that failed: a stale failure must not break a fresh connection.
        if self._session is session and self._broken is None:
            self._broken = reason
            self._wake.set()

    def _unavailable(self) -> str:
        why = self._broken or self.last_error or ("connection lost" if self.generation else "")
        why = why or "not connected yet"
        return f"MCP server {self.name!r} is unavailable ({why}); reconnecting"


class McpPool:
    """The server's MCP connections, one per server config; owned by the app's lifespan."""

    def __init__(self, settings: McpPoolSettings | None = None) -> None:
        self.settings = settings or McpPoolSettings()
        self._connections: dict[str, McpConnection] = {}
        self._closed = False

    def connection(self, config: McpStdioServer | McpHttpServer) -> McpConnection:
        """The shared connection for ``config`` (created, not opened: first use opens it)."""
        if self._closed:
            raise RuntimeError("the MCP pool is closed")
        key = config.connection_key()
        connection = self._connections.get(key)
        if connection is None:
            connection = self._connections[key] = McpConnection(config, self.settings)
        return connection

    def registry(
        self, tools: Iterable[Tool], servers: Sequence[McpStdioServer | McpHttpServer]
    ) -> McpToolRegistry:
        """A conversation's registry: ``tools`` plus the allowed tools of ``servers``."""
        return McpToolRegistry(tools, [(self.connection(s), s.tools) for s in servers])

    def connections(self) -> list[McpConnection]:
        return list(self._connections.values())

    async def aclose(self) -> None:
        """Close every connection and await every owner task."""
        self._closed = True
        await asyncio.gather(*(c.aclose() for c in self._connections.values()))


# -- results ----------------------------------------------------------------------------


def _result_value(result: CallToolResult) -> Any:
    """What the model and the tool card see: text as text, other content described."""
    from mcp.types import TextContent

    texts = [c.text for c in result.content if isinstance(c, TextContent)]
    if result.is_error:
        raise ToolError("\n".join(texts) or "the MCP tool reported an error")
    if not result.content:
        return result.structured_content if result.structured_content is not None else ""
    if len(texts) == len(result.content):
        return "\n".join(texts)
    blocks: list[Any] = []
    for content in result.content:
        if isinstance(content, TextContent):
            blocks.append({"type": "text", "text": content.text})
            continue
        data = content.model_dump(mode="json", by_alias=True, exclude_none=True)
        _summarize_binary(data)
        blocks.append(data)
    return blocks


def _summarize_binary(data: dict[str, Any]) -> None:
    """Replace base64 payloads by their size: a model cannot use them as text."""
    for key in ("data", "blob"):
        if isinstance(data.get(key), str):
            data[key] = f"<{len(data[key]) * 3 // 4} bytes>"
    resource = data.get("resource")
    if isinstance(resource, dict):
        _summarize_binary(resource)


def _describe(exc: BaseException) -> str:
    """A short, single-line reason; task-group wrappers flattened to their causes."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(exc)
    text = "; ".join(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__ for e in leaves)
    return " ".join(text.split())[:300]
