"""From a profile's ``agent: "package.module:attribute"`` to an engine for one conversation.

Three kinds of attribute are accepted, checked when the profiles are loaded so a wrong one
stops the server at startup rather than failing a user's first message:

- an async generator function taking one argument (an ``AgentRequest``): yields ``str``
  chunks, and optionally webchat events and ``Usage``;
- a pydantic-ai ``Agent`` (the optional ``pydantic-ai`` extra);
- an ``Engine``: an object with ``run_inference(turn, ctx)``, or a class of them, built with
  no arguments once per conversation, for full control over events and blocks.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any

from webchat.agents.binding import AgentBinding
from webchat.agents.generator import GeneratorAgentEngine
from webchat.agents.imports import ImportPathError, import_object
from webchat.engines.base import Engine, RunContext
from webchat.turns import Turn

log = logging.getLogger("webchat.agents")

AgentFactory = Callable[[AgentBinding], Engine]
"""Builds the engine of one conversation from its binding."""

KINDS = (
    "an async generator function taking one argument, a pydantic-ai Agent, "
    "or an object (or class) with run_inference(turn, ctx)"
)


class AgentImportError(ImportPathError):
    """An agent path that cannot be imported, or names something of no accepted kind."""


def load_agent(path: str) -> AgentFactory:
    """Import ``path`` and return how to build its engine; raises ``AgentImportError``."""
    try:
        target = import_object(path)
    except ImportPathError as exc:
        raise AgentImportError(str(exc)) from exc
    if inspect.isasyncgenfunction(target):
        _check_one_argument(path, target)
        return lambda binding: GeneratorAgentEngine(target, binding)
    if _is_pydantic_ai_agent(target):
        from webchat.agents.pydantic_ai_agent import PydanticAIAgentEngine

        return lambda binding: PydanticAIAgentEngine(target, binding)
    if isinstance(target, type) and callable(getattr(target, "run_inference", None)):
        engine_class: type[Any] = target
        try:
            inspect.signature(engine_class).bind()
        except (TypeError, ValueError) as exc:
            raise AgentImportError(
                f"{path!r} is an engine class, but cannot be built without arguments: {exc}"
            ) from None
        return lambda binding: LoggedEngine(engine_class(), binding, owned=True)
    if not isinstance(target, type) and callable(getattr(target, "run_inference", None)):
        engine: Engine = target
        return lambda binding: LoggedEngine(engine, binding)
    what = f"the class {target.__name__}" if isinstance(target, type) else type(target).__name__
    hint = ""
    if inspect.iscoroutinefunction(target) or inspect.isgeneratorfunction(target):
        hint = " (an agent function must be 'async def' and use 'yield')"
    raise AgentImportError(f"{path!r} is {what}, not {KINDS}{hint}")


def create_agent_engine(binding: AgentBinding) -> Engine:
    """The engine for ``binding.path`` (imported again only if Python has not already)."""
    return load_agent(binding.path)(binding)


class LoggedEngine:
    """An application's own ``Engine``, used as it is; a failure is logged with its
    traceback (clients see the message only).

    ``owned``: built for this conversation (from a class), so closing the conversation closes
    it (``aclose``); a shared instance serves every conversation and is never closed here.
    """

    def __init__(self, engine: Engine, binding: AgentBinding, *, owned: bool = False) -> None:
        self.engine = engine
        self.binding = binding
        self.owned = owned

    async def run_inference(self, turn: Turn, ctx: RunContext) -> Turn:
        try:
            return await self.engine.run_inference(turn, ctx)
        except Exception:
            log.exception("agent %s (profile %s) failed", self.binding.path, self.binding.profile)
            raise

    async def aclose(self) -> None:
        close = getattr(self.engine, "aclose", None) if self.owned else None
        if close is not None:
            await close()


def _check_one_argument(path: str, function: Callable[..., Any]) -> None:
    try:
        inspect.signature(function).bind(object())
    except TypeError:
        raise AgentImportError(
            f"{path!r} is an async generator function, but must take exactly one argument "
            "(the AgentRequest)"
        ) from None
    except ValueError:  # no signature available: trust it
        pass


def _is_pydantic_ai_agent(target: object) -> bool:
    # An agent object exists only if its module imported pydantic_ai: never import it here.
    if "pydantic_ai" not in sys.modules:
        return False
    from webchat.agents.pydantic_ai_agent import is_pydantic_ai_agent

    return is_pydantic_ai_agent(target)
