"""The JSON shapes of the HTTP API, as OpenAPI documents them.

Routes return these (or dicts of the same shape from ``ChatService``); every error, whatever
its status, is an ``ErrorBody``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from webchat.chat.service import RunAccepted
from webchat.profiles import BusyPolicy

__all__ = [
    "AttachmentPolicy",
    "BusyErrorBody",
    "CancelResult",
    "ConversationDescription",
    "ConversationList",
    "ConversationSummary",
    "ErrorBody",
    "Health",
    "ProfileInfo",
    "RunAccepted",
    "Timeline",
    "errors",
]


class ErrorBody(BaseModel):
    """Every error: a human-readable ``error``, sometimes with details next to it."""

    model_config = ConfigDict(extra="allow")

    error: str


class BusyErrorBody(ErrorBody):
    """409: a run is already active in the conversation."""

    conv_id: str
    inference_id: str | None = None
    last_seq: int


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class AttachmentPolicy(BaseModel):
    """What a profile's conversations accept as uploads, so a UI offers only that (the
    server refuses the rest: 403 for a kind, 413 beyond a limit)."""

    enabled: bool
    kinds: list[Literal["image", "text"]]
    max_bytes: int = Field(description="the largest file accepted (attachment_max_bytes)")
    max_files: int = Field(description="the most files per message (attachment_max_files)")


class ProfileInfo(BaseModel):
    slug: str
    display_name: str
    default_prompt: str
    allow_overrides: bool
    api_type: str
    model: str
    tools: list[str]
    mcp_servers: list[str] = Field(
        default_factory=list, description="names of the profile's MCP servers (nothing else)"
    )
    busy_policy: BusyPolicy
    default: bool
    starters: list[str] = Field(
        default_factory=list, description="prompts the UI offers on an empty conversation"
    )
    attachments: AttachmentPolicy = Field(description="the profile's `attachments` policy")


class CancelResult(BaseModel):
    conv_id: str
    cancelled: bool
    inference_id: str | None = Field(description="the run that was cancelled, if any")


class ConversationSummary(BaseModel):
    conv_id: str
    profile: str
    title: str
    owner: str = Field(default="", description="the id of the user it belongs to")
    updated_at: float
    running: bool


class ConversationList(BaseModel):
    conversations: list[ConversationSummary]


class ConversationDescription(BaseModel):
    conv_id: str
    session_id: str
    profile: str
    signature: dict[str, Any] = Field(description="the engine configuration, without secrets")
    rebuilds: int
    running: bool
    queued: int
    last_seq: int
    clients: int
    turns: list[dict[str, Any]] = Field(
        description="Every turn in creation order (with ``branch``: the branch's turns, root "
        "first). Each holds its whole transcript; ``metadata.parent_turn_id`` names the turn "
        "it continues (null: a root)."
    )
    tip: str | None = Field(
        default=None,
        description="The tip of the current branch: the most recently created turn, which "
        "a run without parent_turn_id continues (null: no turns yet)",
    )
    children: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Every turn id mapped to its children's ids in creation order; the roots "
        'are under "". Siblings (children of one parent) are the branches of that point.',
    )
    branch: str | None = Field(default=None, description="The branch asked for (a turn id), if any")


class Timeline(BaseModel):
    conv_id: str
    frames: list[dict[str, Any]]
    last_seq: int


_DESCRIPTIONS = {
    400: "Malformed request (invalid JSON, bad overrides, bad conv_id)",
    401: "Not signed in: no valid session cookie or Bearer token",
    403: "The profile does not allow overrides, a cross-site request, or an admin acting "
    "in another user's conversation",
    404: "Unknown profile or conversation (another user's conversation is unknown too)",
    409: "A run is already active in the conversation",
    413: "Request body or prompt too large",
    422: "Invalid request parameters or body, or a reused Idempotency-Key",
    429: "A quota is spent (runs at once, runs a minute, stored conversations) or too many "
    "failed log-ins; Retry-After says when to try again",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that may answer these error statuses."""
    return {
        status: {
            "model": BusyErrorBody if status == 409 else ErrorBody,
            "description": _DESCRIPTIONS[status],
        }
        for status in statuses
    }
