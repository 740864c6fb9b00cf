"""Provider adapters behind one small interface (``Engine``), and the factory that picks one."""

from webchat.engines.base import (
    Engine,
    EngineError,
    Handler,
    RunContext,
    SnapshotHook,
    SnapshotPhase,
    ToolDefinition,
)
from webchat.engines.offline import OfflineEngine
from webchat.engines.settings import ApiType, StepSettings
from webchat.engines.streaming import InferenceStream, stream_inference


def create_engine(settings: StepSettings) -> Engine:
    """The engine for ``settings.api_type``. SDK modules are imported only when used."""
    if settings.api_type == "offline":
        return OfflineEngine(settings)
    if settings.api_type == "openai":
        from webchat.engines.openai_chat import OpenAIChatEngine

        return OpenAIChatEngine(settings)
    if settings.api_type == "anthropic":
        from webchat.engines.anthropic_messages import AnthropicMessagesEngine

        return AnthropicMessagesEngine(settings)
    raise ValueError(f"unknown api_type {settings.api_type!r}")


__all__ = [
    "ApiType",
    "Engine",
    "EngineError",
    "Handler",
    "InferenceStream",
    "OfflineEngine",
    "RunContext",
    "SnapshotHook",
    "SnapshotPhase",
    "StepSettings",
    "ToolDefinition",
    "create_engine",
    "stream_inference",
]
