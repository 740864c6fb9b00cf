"""Errors the core raises for bad requests; each knows the HTTP status it means.

The HTTP layer maps them to ``{"error": ...}`` responses without knowing any core details.
"""

from __future__ import annotations

from typing import Any


class WebchatError(Exception):
    status_code = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequestError(WebchatError):
    """Malformed input: bad overrides, unknown middleware or tool, unserialisable config."""

    status_code = 400


class OverridesNotAllowedError(WebchatError):
    status_code = 403


class UnknownProfileError(WebchatError):
    status_code = 404


class UnknownConversationError(WebchatError):
    status_code = 404


class ConversationBusyError(WebchatError):
    status_code = 409


class IdempotencyKeyReusedError(WebchatError):
    """An ``Idempotency-Key`` already used by a request with a different method, path, body
    or resolved profile: replaying the first response would answer a request nobody made."""

    status_code = 422

    def __init__(self) -> None:
        super().__init__("Idempotency-Key reused with a different request")
