"""HTTP routes for managing conversations: rename, delete, search, feedback and export.

Each route translates a request into one ``ConversationManagement`` call and back, with the
user from ``principal_of``; every status it can answer is declared (``schemas.errors``).

Include this router *before* ``webchat.server.api.router``: ``GET
/api/conversations/search`` must be matched before ``GET /api/conversations/{conv_id}``
takes ``search`` for a conversation id.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from webchat.chat.management import ConversationExport, ConversationManagement, export_markdown
from webchat.chat.service import CONV_ID_PATTERN
from webchat.server.api import ConvId, service_of
from webchat.server.schemas import ConversationList, ConversationSummary, errors
from webchat.server.security import principal_of
from webchat.storage import Feedback, Rating

__all__ = [
    "DeleteResult",
    "FeedbackRequest",
    "FeedbackResult",
    "RenameRequest",
    "management_of",
    "router",
]

router = APIRouter()

TITLE_MAX = 200
COMMENT_MAX = 2000
SEARCH_LIMIT_MAX = 200

TurnId = Annotated[
    str,
    Path(
        pattern=CONV_ID_PATTERN.pattern,
        description="the turn's id (``turn_id`` in the conversation's turns and frames)",
    ),
]


def _one_line_title(title: str) -> str:
    """Whitespace runs (newlines too) become one space; nothing but whitespace is refused."""
    title = " ".join(title.split())
    if not title:
        raise ValueError("the title must not be blank")
    return title


class RenameRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[
        str, Field(min_length=1, max_length=TITLE_MAX), AfterValidator(_one_line_title)
    ]


class DeleteResult(BaseModel):
    conv_id: str
    deleted: Literal[True]


class FeedbackRequest(BaseModel):
    """No rating and no comment (or an empty one) removes the feedback."""

    model_config = ConfigDict(extra="forbid")

    rating: Rating | None = None
    comment: Annotated[str | None, Field(max_length=COMMENT_MAX)] = None


class FeedbackResult(Feedback):
    conv_id: str
    turn_id: str


EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The conversation as a download: JSON (record, turns, feedback) or a "
        "Markdown transcript",
        "content": {"text/markdown": {"schema": {"type": "string"}}},
        "headers": {
            "Content-Disposition": {
                "description": 'attachment; filename="<conv_id>.json" (or .md)',
                "schema": {"type": "string"},
            }
        },
    },
    **errors(401, 404, 422),
}


def management_of(request: Request) -> ConversationManagement:
    """Stateless over the service, so one per request costs nothing."""
    return ConversationManagement(service_of(request))


@router.get(
    "/api/conversations/search",
    operation_id="search_conversations",
    response_model=ConversationList,
    responses=errors(401, 422),
)
async def search(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=200, description="words to look for")],
    limit: Annotated[int, Query(ge=1, le=SEARCH_LIMIT_MAX)] = 50,
) -> dict[str, Any]:
    """The caller's conversations (an admin's: everyone's) whose title, or one message
    exchange, holds every word of ``q`` (words are letters and digits; each also matches as
    the beginning of a word), newest first."""
    found = await management_of(request).search(q, limit, principal_of(request))
    return {"conversations": found}


@router.patch(
    "/api/conversations/{conv_id}",
    operation_id="rename_conversation",
    response_model=ConversationSummary,
    responses=errors(400, 401, 403, 404, 413, 422),
)
async def rename(request: Request, conv_id: ConvId, body: RenameRequest) -> dict[str, Any]:
    """Rename a conversation of the caller's (1-200 characters, on one line)."""
    return await management_of(request).rename(conv_id, body.title, principal_of(request))


@router.delete(
    "/api/conversations/{conv_id}",
    operation_id="delete_conversation",
    response_model=DeleteResult,
    responses=errors(401, 403, 404, 413, 422),
)
async def delete(request: Request, conv_id: ConvId) -> dict[str, Any]:
    """Delete a conversation of the caller's, with its history and feedback. A run in it is
    cancelled first; every open WebSocket of it receives a ``conversation.deleted`` frame
    and is closed with code 4404."""
    return await management_of(request).delete(conv_id, principal_of(request))


@router.put(
    "/api/conversations/{conv_id}/turns/{turn_id}/feedback",
    operation_id="save_feedback",
    response_model=FeedbackResult,
    responses=errors(400, 401, 403, 404, 413, 422),
)
async def save_feedback(
    request: Request, conv_id: ConvId, turn_id: TurnId, body: FeedbackRequest
) -> dict[str, Any]:
    """Rate an answer up or down, with an optional comment (replacing earlier feedback)."""
    return await management_of(request).save_feedback(
        conv_id, turn_id, body.rating, body.comment, principal_of(request)
    )


@router.get(
    "/api/conversations/{conv_id}/feedback",
    operation_id="feedback",
    response_model=dict[str, Feedback],
    responses=errors(401, 404, 422),
)
async def feedback(request: Request, conv_id: ConvId) -> dict[str, Feedback]:
    """The conversation's feedback by turn id."""
    return await management_of(request).feedback(conv_id, principal_of(request))


@router.get(
    "/api/conversations/{conv_id}/export",
    operation_id="export_conversation",
    response_model=ConversationExport,
    responses=EXPORT_RESPONSES,
)
async def export(
    request: Request,
    conv_id: ConvId,
    export_format: Annotated[Literal["json", "markdown"], Query(alias="format")] = "json",
) -> Response:
    """Download a conversation: ``json`` (its record, turns and feedback, as stored) or
    ``markdown`` (a readable transcript)."""
    document = await management_of(request).export(conv_id, principal_of(request))
    if export_format == "markdown":
        body, media_type, extension = export_markdown(document), "text/markdown", "md"
    else:
        body, media_type, extension = document.model_dump_json(), "application/json", "json"
    headers = {
        "Content-Disposition": f'attachment; filename="{conv_id}.{extension}"',
        "X-Content-Type-Options": "nosniff",
    }
    return Response(body, media_type=media_type, headers=headers)
