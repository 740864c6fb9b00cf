"""The ASGI application: routes, error handlers and the lifespan.

The lifespan gets every part it serves from ``webchat.server.composition.compose`` (the only
place that chooses implementations: in-memory or Redis transport, SQLite or Redis store) and
closes them in reverse order; ``load_profiles`` and the ``make_*`` factories are re-exported
from there.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import webchat
from webchat.agents import ImportPathError, import_object
from webchat.auth.gate import check_auth_settings
from webchat.errors import WebchatError
from webchat.observability import Observability, activate
from webchat.observability.docs import add_docs_route
from webchat.observability.middleware import ObservabilityMiddleware
from webchat.server import agui_api, api, attachments_api, auth_routes, manage_api, openai_api, ws
from webchat.server.composition import (
    BuilderSetup,
    compose,
    load_profiles,
    make_coordination,
    make_store,
    make_transport,
)
from webchat.server.limits import BodyLimitMiddleware, upload_body_limit
from webchat.server.security import SecurityMiddleware
from webchat.settings import ServerSettings
from webchat.storage.postgres import redacted

log = logging.getLogger("webchat.server")

__all__ = [
    "STATIC",
    "BuilderSetup",
    "create_app",
    "load_profiles",
    "make_coordination",
    "make_store",
    "make_transport",
    "resolve_setup",
]

STATIC = resources.files("webchat") / "static"
NO_STORE = {"Cache-Control": "no-store"}


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
    mode = check_auth_settings(settings)  # e.g. --host 0.0.0.0 without --auth
    # This app's own metrics registry (never the global one) and tracing options.
    observability = Observability(capture_content=settings.otel_capture_content)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with activate(observability):  # background tasks started here report to this app
            async with _serve(app):
                yield

    @contextlib.asynccontextmanager
    async def _serve(app: FastAPI) -> AsyncIterator[None]:
        parts = await compose(settings, profiles, setup=extend)
        app.state.components = parts
        app.state.settings = settings
        app.state.gate = parts.gate
        app.state.mcp = parts.mcp
        service = parts.service
        app.state.service = service
        await service.start()
        parts.gate.start()
        log.info(
            "webchat %s ready: transport=%s db=%s profiles=%s",
            webchat.__version__,
            settings.transport,
            redacted(settings.db),  # a postgresql:// URL may hold a password
            ",".join(p.slug for p in profiles.all()),
        )
        try:
            yield
        finally:
            await parts.aclose()  # what compose built, in reverse order

    app = FastAPI(title="webchat", version=webchat.__version__, lifespan=lifespan, docs_url=None)
    app.state.observability = observability
    ws.quiet_invalid_utf8_tracebacks()
    app.add_middleware(ObservabilityMiddleware, observability=observability)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        upload_max_bytes=upload_body_limit(settings.attachment_max_bytes),
    )
    # Added last, so it runs first: nothing is read or parsed for a request it refuses.
    app.add_middleware(SecurityMiddleware, root=settings.root)

    @app.exception_handler(WebchatError)
    async def webchat_error(request: Request, exc: WebchatError) -> JSONResponse:
        return JSONResponse(
            {"error": exc.message, **exc.details},
            status_code=exc.status_code,
            headers=exc.headers,
        )

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
    # First: its /api/conversations/search must win over /api/conversations/{conv_id}.
    app.include_router(manage_api.router, prefix=prefix)
    app.include_router(api.router, prefix=prefix)
    app.include_router(attachments_api.router, prefix=prefix)
    app.include_router(ws.router, prefix=prefix)
    app.include_router(openai_api.router, prefix=prefix)
    app.include_router(agui_api.router, prefix=prefix)
    app.include_router(auth_routes.router, prefix=prefix)
    if mode == "oidc":
        from webchat.auth import oidc  # Authlib is loaded only where it is used

        app.include_router(oidc.router, prefix=prefix)

    @app.get(prefix + "/", include_in_schema=False)
    async def index() -> Response:
        # Never from cache: the page's redirect to the log-in page must happen every time.
        return FileResponse(str(STATIC / "index.html"), media_type="text/html", headers=NO_STORE)

    add_docs_route(app, static_prefix=prefix + "/static")  # vendored Swagger UI, no CDN
    app.mount(prefix + "/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
