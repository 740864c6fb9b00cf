"""What an agent engine is bound to: one conversation's profile, settings and tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from webchat.agents.request import AgentRequest
from webchat.engines.base import RunContext
from webchat.engines.settings import StepSettings
from webchat.tools.registry import ToolRegistry
from webchat.turns import Turn

if TYPE_CHECKING:  # output.py imports this module's neighbours; import it at call time
    from webchat.agents.output import AgentOutput


@dataclass(frozen=True, slots=True)
class AgentBinding:
    """Built by ``EngineBuilder.build_from_config``: the same tools the conversation's tool
    loop holds, so an agent's ``call_tool`` obeys the profile exactly as a model's calls do."""

    path: str
    conv_id: str
    profile: str
    settings: StepSettings = field(default_factory=StepSettings)
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    tool_timeout: float = 30.0

    @property
    def model_label(self) -> str:
        """What ``llm.start`` names as the model: the configured model, else the agent."""
        return self.settings.model or self.path

    @property
    def label(self) -> str:
        """How logs name this agent: its path and profile."""
        return f"agent {self.path} (profile {self.profile})"

    def output(self, turn: Turn, ctx: RunContext, *, model: str | None = None) -> AgentOutput:
        """The event and block bookkeeping of one run on ``turn``."""
        from webchat.agents.output import AgentOutput

        return AgentOutput(
            turn,
            ctx,
            self.settings,
            model=model or self.model_label,
            tools=self.tools,
            tool_timeout=self.tool_timeout,
        )

    def request(self, turn: Turn, ctx: RunContext) -> AgentRequest:
        """The ``AgentRequest`` for a run on ``turn`` (its tools not yet bound)."""
        from webchat.engines.openai_chat import turn_to_messages

        return AgentRequest(
            prompt=turn.last_user_text(),
            messages=[cast(dict[str, Any], dict(m)) for m in turn_to_messages(turn)],
            conv_id=self.conv_id,
            session_id=ctx.session_id,
            inference_id=ctx.inference_id,
            turn_id=ctx.turn_id,
            profile=self.profile,
            settings=self.settings,
            tools=ctx.tools,
        )
