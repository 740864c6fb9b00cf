"""The HTTP server (FastAPI on uvicorn)."""

from webchat.server.app import create_app

__all__ = ["create_app"]
