"""HTTP routes for attachments: upload a file into a conversation, list and download them.

Uploads are multipart (``file`` field). What is accepted, and who may read it, is decided by
``webchat.chat.attachments``; this module only translates, and serves files back so that a
browser can never run one: the sniffed media type, ``nosniff``, ``Content-Security-Policy:
default-src 'none'``, and ``Content-Disposition: attachment`` for everything but the four
raster image types, which may show ``inline`` (as thumbnails).

A browser upload needs ``X-Requested-With`` (a multipart body is not JSON: see
``webchat.server.security``).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Cookie, File, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from webchat.chat.attachments import (
    IMAGE_TYPES,
    AttachmentKind,
    AttachmentService,
    attachment_ref,
    kind_of,
)
from webchat.chat.service import CONV_ID_PATTERN
from webchat.server.api import ConvId, service_of
from webchat.server.schemas import ErrorBody, errors
from webchat.server.security import principal_of
from webchat.storage import AttachmentRecord

__all__ = ["AttachmentInfo", "AttachmentList", "router"]

router = APIRouter()

AttachmentId = Annotated[
    str, Path(pattern=CONV_ID_PATTERN.pattern, description="the attachment's id")
]

SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Ids are never reused, so a file never changes; private: it is one user's.
    "Cache-Control": "private, max-age=3600",
}


class AttachmentInfo(BaseModel):
    id: str
    name: str
    media_type: str
    size: int
    kind: AttachmentKind
    url: str


class AttachmentList(BaseModel):
    attachments: list[AttachmentInfo]


UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **errors(400, 401, 403, 404, 413, 422, 429),
    415: {"model": ErrorBody, "description": "Not an accepted kind of file"},
}


def attachments_of(request: Request) -> AttachmentService:
    return service_of(request).scheduler.attachments


def _info(request: Request, record: AttachmentRecord) -> dict[str, Any]:
    url = request.url_for("attachment", conv_id=record.conv_id, attachment_id=record.id)
    return {**attachment_ref(record), "url": url.path}


def content_disposition(record: AttachmentRecord) -> str:
    """``inline`` only for raster images; the name both as ASCII and (RFC 5987) UTF-8."""
    disposition = "inline" if record.media_type in IMAGE_TYPES else "attachment"
    fallback = record.name.encode("ascii", "replace").decode().replace("?", "_")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(record.name)}"


@router.post(
    "/api/conversations/{conv_id}/attachments",
    operation_id="upload_attachment",
    status_code=201,
    response_model=AttachmentInfo,
    responses=UPLOAD_RESPONSES,
)
async def upload(
    request: Request,
    conv_id: ConvId,
    file: Annotated[UploadFile, File(description="the file (multipart field ``file``)")],
    profile: Annotated[
        str | None,
        Query(max_length=64, description="the profile the file is for (its `attachments`)"),
    ] = None,
    chat_profile: Annotated[str | None, Cookie()] = None,
) -> JSONResponse:
    """Upload a file into a conversation of the caller's (a new id becomes theirs), for a
    later ``POST /chat`` to carry in ``attachments``. Images (PNG, JPEG, WebP, GIF, judged by
    their bytes) and UTF-8 text files (.txt, .md, .csv, .json, source code), at most
    ``attachment_max_bytes`` (5 MiB by default; 413 beyond); anything else is a 415, and
    what the profile (``?profile=``, else the ``chat_profile`` cookie, else the default)
    does not take, a 403."""
    service = service_of(request)
    chosen = service.profiles.get(profile or chat_profile or service.profiles.default_slug)
    attachments = attachments_of(request)
    data = await file.read(attachments.max_bytes + 1)
    if len(data) > attachments.max_bytes:
        # Ownership is still checked first: someone else's conversation stays a 404.
        await service.access.claim(conv_id, principal_of(request), to_write=True)
        raise attachments.too_large()
    record = await attachments.upload(conv_id, principal_of(request), chosen, file.filename, data)
    return JSONResponse(_info(request, record), status_code=201)


@router.get(
    "/api/conversations/{conv_id}/attachments",
    operation_id="attachments",
    response_model=AttachmentList,
    responses=errors(401, 404, 422),
)
async def list_attachments(request: Request, conv_id: ConvId) -> dict[str, Any]:
    """The conversation's uploads, oldest first (owner or admin)."""
    service = service_of(request)
    await service.access.check_read(conv_id, principal_of(request))
    records = await service.store.list_attachments(conv_id)
    return {"attachments": [_info(request, r) for r in records]}


@router.get(
    "/api/conversations/{conv_id}/attachments/{attachment_id}",
    name="attachment",
    operation_id="attachment",
    response_class=Response,
    responses={
        200: {
            "description": "The file, as its sniffed type, with headers that keep a browser "
            "from running it",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        **errors(401, 404, 422),
    },
)
async def download(request: Request, conv_id: ConvId, attachment_id: AttachmentId) -> Response:
    """The file (owner or admin; 404 for anyone else)."""
    record, data = await attachments_of(request).read(conv_id, attachment_id, principal_of(request))
    media_type = record.media_type
    if kind_of(media_type) == "text":
        media_type += "; charset=utf-8"
    headers = {**SAFE_HEADERS, "Content-Disposition": content_disposition(record)}
    return Response(data, media_type=media_type, headers=headers)
