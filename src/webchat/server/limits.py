"""Refuse request bodies over the configured size before any handler reads them."""

from __future__ import annotations

import json
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPART_OVERHEAD: Final = 64 * 1024
"""What an upload's body may hold besides its file (the multipart boundaries and headers)."""


def upload_body_limit(attachment_max_bytes: int) -> int:
    """The body limit of an upload: one file of the largest size accepted, in its frame."""
    return attachment_max_bytes + MULTIPART_OVERHEAD


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``, whether or not it declares its length.

    Uploads (``POST .../attachments``) may be as large as ``upload_max_bytes`` (see
    ``upload_body_limit``): the attachment route enforces its own per-file limit on what
    gets through, and a body too large for any accepted file is refused here, unread.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int = 0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = max(upload_max_bytes, max_bytes)

    @staticmethod
    def _is_upload(scope: Scope) -> bool:
        return scope["method"] == "POST" and str(scope["path"]).endswith("/attachments")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        upload = self._is_upload(scope)
        limit = self.upload_max_bytes if upload else self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit, upload=upload)
            return
        # Read the body here (bounded), then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(send, limit, upload=upload)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _too_large(send: Send, limit: int, *, upload: bool) -> None:
        error = (
            f"the upload is larger than {limit} bytes (files are limited by attachment_max_bytes)"
            if upload
            else f"request body is larger than {limit} bytes"
        )
        payload = json.dumps({"error": error, "limit": limit}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
