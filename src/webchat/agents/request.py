"""What a Python agent is handed for one run: the conversation, its ids, settings and tools.

An agent is code the application owns, often calling some SDK directly, so the request gives
the conversation in the format every SDK accepts (OpenAI chat messages, system prompt first)
rather than webchat's blocks, plus one way to use the profile's tools that shows each call as
a tool card in every browser watching.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from webchat.engines.base import ToolDefinition
from webchat.engines.settings import StepSettings

ToolCaller = Callable[[str, Mapping[str, Any] | str | None], Awaitable[Any]]


class AgentRequest(BaseModel):
    """One run of an agent: ``prompt`` is the new user text, ``messages`` the whole
    conversation (it ends with that prompt), ready for ``client.chat.completions.create``."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    prompt: str
    messages: list[dict[str, Any]] = Field(
        description="OpenAI chat format: system prompt first, then user/assistant/tool "
        "messages. A user message with attachments has a list of content parts as its "
        "content: its text, an image_url part (a base64 data URL) per image, and a text part "
        "'<name>:\n<content>' per text file; one without attachments has a plain string."
    )
    conv_id: str
    session_id: str | None = None
    inference_id: str | None = None
    turn_id: str | None = None
    profile: str = Field(description="the profile's slug")
    settings: StepSettings = Field(description="the profile's step settings, after overrides")
    tools: tuple[ToolDefinition, ...] = Field(
        default=(), description="the profile's tools offered in this run (see call_tool)"
    )

    _call_tool: ToolCaller | None = PrivateAttr(default=None)

    def bind_tools(self, caller: ToolCaller) -> AgentRequest:
        """Attach the run's tool executor (done by webchat before the agent sees the request)."""
        self._call_tool = caller
        return self

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | str | None = None) -> Any:
        """Run one of the profile's tools and return its result.

        The call and its result are published (``tool.start``, ``tool.result``) so they show as
        a tool card, and recorded in the conversation's history. A tool that is not offered,
        gets bad arguments, times out or fails raises ``webchat.tools.ToolError`` carrying the
        message the card shows: the agent decides whether to tell its model or to give up.
        """
        if self._call_tool is None:
            raise RuntimeError("this request is not bound to a run: no tools can be called")
        return await self._call_tool(name, arguments)

    def openai_tools(self) -> list[dict[str, Any]]:
        """``tools`` in the Chat Completions ``tools=`` format, to hand to an SDK as they are."""
        return [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in self.tools
        ]
