"""``/docs``: Swagger UI from the package's own vendored files, never from a CDN.

FastAPI's default page loads swagger-ui from jsDelivr and its favicon from
fastapi.tiangolo.com, so it is blank offline and tells a third party who reads the docs.
The same page, pointed at ``static/vendor/swagger-ui/`` (see ``VENDORED.md``), works
anywhere the server does.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

__all__ = ["DOCS_PATH", "add_docs_route"]

DOCS_PATH = "/docs"
SWAGGER_PARAMETERS = {
    "dom_id": "#swagger-ui",
    "layout": "BaseLayout",
    "deepLinking": True,
    "showExtensions": True,
    "showCommonExtensions": True,
    # Swagger UI otherwise sends the spec's URL to validator.swagger.io for a badge.
    "validatorUrl": None,
}


def add_docs_route(app: FastAPI, static_prefix: str) -> None:
    """Serve the docs at ``/docs`` (as FastAPI would); ``static_prefix`` is where the
    package's ``static/`` directory is mounted. The app must be built with
    ``docs_url=None``."""
    vendor = f"{static_prefix}/vendor/swagger-ui"

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
            swagger_css_url=f"{vendor}/swagger-ui.css",
            swagger_favicon_url=f"{vendor}/favicon-32x32.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )
