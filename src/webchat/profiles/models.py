"""Profiles (named recipes for an agent) and per-request overrides."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from webchat.engines.settings import StepSettings
from webchat.tools.mcp import McpServers

BusyPolicy = Literal["reject", "enqueue", "interrupt"]

OVERRIDABLE_SETTINGS = ("model", "temperature", "top_p", "max_tokens", "stop")
"""Model settings a profile may let requests change. Never endpoints or keys."""

IMPORT_PATH_PATTERN = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
"""``package.module:attribute``: how a profile names a Python agent or tool."""


class MiddlewareUse(BaseModel):
    """A middleware by registered name, with its JSON configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("config")
    @classmethod
    def _json_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        # A config that cannot be canonical JSON cannot be part of a signature.
        try:
            json.dumps(value, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"middleware config is not JSON-serializable: {exc}") from exc
        return value


class ToolLoopOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_iterations: int = Field(default=5, ge=1, le=50)
    tool_timeout: float = Field(default=30.0, gt=0, le=600)
    max_parallel: int = Field(default=4, ge=1, le=64)


AttachmentKindName = Literal["image", "text"]


class AttachmentOptions(BaseModel):
    """Which uploads a profile's conversations take: a model without vision, or an agent
    that reads no files, turns them off (or limits them to ``text``); refused ones get 403."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    kinds: list[AttachmentKindName] = Field(
        default_factory=lambda: list[AttachmentKindName](["image", "text"])
    )


class OpenAIApiOptions(BaseModel):
    """How the OpenAI-compatible API (and AG-UI) treat a profile: ``client_tools: true``
    accepts requests that define tools of their own and ignores those tools (the model is
    offered only the profile's server-side tools); false (the default) refuses them (400)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_tools: bool = False


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    slug: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    display_name: str | None = None
    default_prompt: str = ""
    middlewares: list[MiddlewareUse] = Field(
        default_factory=list, validation_alias=AliasChoices("middlewares", "default_middlewares")
    )
    tools: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("tools", "default_tools")
    )
    step_settings: StepSettings = Field(default_factory=StepSettings)
    allow_overrides: bool = False
    overridable_settings: list[str] = Field(default_factory=lambda: list(OVERRIDABLE_SETTINGS))
    tool_loop: ToolLoopOptions = Field(default_factory=ToolLoopOptions)
    busy_policy: BusyPolicy | None = None
    mcp_servers: McpServers = Field(
        default_factory=list,
        description="MCP servers whose tools this profile offers as <server>__<tool>; "
        "never overridable (a request must not start processes or reach hosts)",
    )
    agent: str | None = Field(
        default=None,
        min_length=1,
        description="a Python agent ('package.module:attribute') replacing the provider engine; "
        "the registry imports it when the profiles are loaded, so a bad path fails at startup",
    )
    starters: list[Annotated[str, StringConstraints(min_length=1, max_length=500)]] = Field(
        default_factory=list,
        max_length=12,
        description="prompts the UI offers on an empty conversation; shown, never run unasked",
    )

    attachments: AttachmentOptions = Field(
        default_factory=AttachmentOptions,
        description="uploads this profile accepts: {enabled: bool, kinds: [image, text]}",
    )
    openai_api: OpenAIApiOptions = Field(
        default_factory=OpenAIApiOptions,
        description="/v1/chat/completions and /ag-ui: {client_tools: bool} (default false: "
        "a request defining its own tools is a 400; true: they are accepted and ignored)",
    )

    @field_validator("overridable_settings")
    @classmethod
    def _only_model_settings(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(OVERRIDABLE_SETTINGS)
        if unknown:
            raise ValueError(
                f"{sorted(unknown)} cannot be overridable; choose from {OVERRIDABLE_SETTINGS}"
            )
        return value

    @property
    def title(self) -> str:
        return self.display_name or self.slug


class Overrides(BaseModel):
    """What one request may change, if its profile allows overrides."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: str | None = Field(default=None, max_length=100_000)
    middlewares: list[MiddlewareUse] | None = None
    tools: list[str] | None = None
    step_settings: dict[str, Any] | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in self.model_dump().values())
