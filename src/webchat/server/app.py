"""The ASGI application: wiring of settings, transport, store, builder and service.

``create_app`` is the only place that chooses implementations (in-memory or Redis transport,
SQLite store, profile source); everything below it receives them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import webchat
from webchat.agents import ImportPathError, import_object
from webchat.chat.coordination import Coordination, LocalCoordination, RedisCoordination
from webchat.chat.service import ChatService
from webchat.conversation import EngineBuilder, ProviderKeys
from webchat.errors import WebchatError
from webchat.profiles import ProfileRegistry
from webchat.server import api, ws
from webchat.server.limits import BodyLimitMiddleware
from webchat.settings import ServerSettings
from webchat.storage import SQLiteStore, Store
from webchat.storage.redis_store import RedisStore
from webchat.tools.mcp import McpPool
from webchat.transport import Transport, create_transport

log = logging.getLogger("webchat.server")

STATIC = resources.files("webchat") / "static"


def load_profiles(settings: ServerSettings) -> ProfileRegistry:
    if settings.profiles is not None:
        return ProfileRegistry.from_file(settings.profiles)
    return ProfileRegistry.builtin(
        openai_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
        anthropic_key=(
            settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        ),
    )


def make_transport(settings: ServerSettings) -> Transport:
    if settings.transport == "redis":
        return create_transport("redis", redis_url=settings.redis_url, maxlen=settings.redis_maxlen)
    return create_transport("memory")


def make_store(settings: ServerSettings) -> Store:
    """Processes sharing a Redis transport share their state there too."""
    if settings.transport == "redis":
        return RedisStore(settings.redis_url)
    return SQLiteStore(settings.db)


def make_coordination(settings: ServerSettings) -> Coordination:
    if settings.transport == "redis":
        return RedisCoordination(settings.redis_url)
    return LocalCoordination()


BuilderSetup = Callable[[EngineBuilder], None]
"""Application code that extends the one EngineBuilder: ``register_tool``,
``register_middleware``, ``add_sink_wrapper``."""


def resolve_setup(setup: BuilderSetup | str | None) -> BuilderSetup | None:
    """``setup`` itself, or the function (or the ``setup`` method of the object) an import
    path names; ``ValueError`` naming the path when it is neither."""
    if setup is None or callable(setup):
        return setup
    try:
        target = import_object(setup)
    except ImportPathError as exc:
        raise ValueError(f"--app {setup}: {exc}") from None
    method = getattr(target, "setup", None)
    if callable(method) and not isinstance(target, type):
        return cast(BuilderSetup, method)
    if callable(target):
        return cast(BuilderSetup, target)
    raise ValueError(
        f"--app {setup}: {type(target).__name__} is neither a function taking the "
        "EngineBuilder nor an object with a setup(builder) method"
    )


def create_app(
    settings: ServerSettings | None = None, *, setup: BuilderSetup | str | None = None
) -> FastAPI:
    """The webchat ASGI app. ``setup`` (default: ``settings.app``) is application code that
    registers its tools, middlewares and sink wrappers on the EngineBuilder at start-up,
    before any profile is checked against them."""
    settings = settings or ServerSettings()
    extend = resolve_setup(setup if setup is not None else settings.app)  # fail at start-up
    profiles = load_profiles(settings)  # fail at start-up, not on the first request

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        transport = make_transport(settings)
        store = make_store(settings)
        await store.open()
        mcp = McpPool()  # MCP connections: opened on first use, closed below
        app.state.mcp = mcp
        builder = EngineBuilder(
            profiles,
            transport,
            provider_keys=ProviderKeys(
                openai=settings.openai_api_key, anthropic=settings.anthropic_api_key
            ),
            mcp_pool=mcp,
        )
        if extend is not None:
            extend(builder)
        builder.check_profiles()  # a profile naming a tool no one registered: fail now
        service = ChatService(
            settings,
            profiles,
            transport,
            store,
            builder,
            make_coordination(settings),
            shared_state=settings.transport == "redis",
        )
        app.state.service = service
        await service.start()
        log.info(
            "webchat %s ready: transport=%s db=%s profiles=%s",
            webchat.__version__,
            settings.transport,
            settings.db,
            ",".join(p.slug for p in profiles.all()),
        )
        try:
            yield
        finally:
            await service.close()
            await mcp.aclose()  # after the runs that could call a tool are gone
            await store.close()
            await transport.close()

    app = FastAPI(title="webchat", version=webchat.__version__, lifespan=lifespan)
    ws.quiet_invalid_utf8_tracebacks()
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

    @app.exception_handler(WebchatError)
    async def webchat_error(request: Request, exc: WebchatError) -> JSONResponse:
        return JSONResponse({"error": exc.message, **exc.details}, status_code=exc.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown routes, wrong methods, missing static files: the same {"error": ...} shape.
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # The last resort (Starlette still logs the traceback): JSON, never text/plain.
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"error": "request body is not valid JSON"}, status_code=400)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors
        )
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    prefix = settings.root
    app.include_router(api.router, prefix=prefix)
    app.include_router(ws.router, prefix=prefix)

    @app.get(prefix + "/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount(prefix + "/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
