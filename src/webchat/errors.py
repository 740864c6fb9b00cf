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

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the response must carry (e.g. ``Retry-After``)."""
        return {}


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


class ForbiddenError(WebchatError):
    """Allowed to see, not to act: an admin reading another user's conversation."""

    status_code = 403


class QuotaExceededError(WebchatError):
    """A user's quota (runs at once, runs a minute, stored conversations) is spent.
    ``retry_after`` (seconds) becomes the ``Retry-After`` header when waiting helps."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}
