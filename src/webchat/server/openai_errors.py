"""OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``.

Its own module because two layers answer errors under ``/v1/``: the security middleware (401,
429 before any route runs) and the routes of ``webchat.server.openai_api``; OpenAI's clients
parse this shape to raise their usual exceptions.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["ERROR_TYPES", "OPENAI_PREFIX", "OpenAIErrorBody", "OpenAIErrorResponse", "error_body"]

OPENAI_PREFIX = "/v1/"
"""Paths (below ``--root``) whose errors have OpenAI's shape."""

ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("not_found_error", "conversation_not_found"),
    409: ("conflict_error", "conversation_busy"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
"""(type, default code) by HTTP status; any other status is a ``server_error``."""


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorBody


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The error object for ``status``."""
    kind, default_code = ERROR_TYPES.get(status, ("server_error", None))
    body = OpenAIErrorBody(message=message, type=kind, param=param, code=code or default_code)
    return OpenAIErrorResponse(error=body).model_dump()
