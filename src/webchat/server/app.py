"""The ASGI application. Route handlers stay thin: they translate HTTP to calls on the core."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

import webchat

_INDEX = """<!doctype html><html><head><meta charset="utf-8"><title>webchat</title></head>
<body><h1>webchat</h1><p>The server is running on its embedded defaults (offline engine,
in-memory transport). The chat UI is not built yet; see <code>/healthz</code>.</p></body></html>
"""


def create_app() -> FastAPI:
    app = FastAPI(title="webchat", version=webchat.__version__)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": webchat.__version__}

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return _INDEX

    return app
