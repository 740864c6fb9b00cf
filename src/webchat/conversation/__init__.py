"""The conversation core: composition (EngineBuilder), lifecycle (ConversationManager) and
streaming (StreamCoordinator -> FrameBuffer + ConnectionPool)."""

from webchat.conversation.buffer import FrameBuffer
from webchat.conversation.builder import (
    ComposedEngine,
    EngineBuilder,
    MiddlewareFactory,
    ProviderKeys,
    SinkWrapper,
    ToolFactory,
)
from webchat.conversation.config import EngineConfig, fingerprint, redact
from webchat.conversation.conversation import Conversation, lifecycle_runner
from webchat.conversation.frames import Frame, FrameTranslator
from webchat.conversation.manager import ConversationManager
from webchat.conversation.pool import Client, Connection, ConnectionPool
from webchat.conversation.stream import StreamCoordinator
from webchat.conversation.subscribers import SubscriberFactory

__all__ = [
    "Client",
    "ComposedEngine",
    "Connection",
    "ConnectionPool",
    "Conversation",
    "ConversationManager",
    "EngineBuilder",
    "EngineConfig",
    "Frame",
    "FrameBuffer",
    "FrameTranslator",
    "MiddlewareFactory",
    "ProviderKeys",
    "SinkWrapper",
    "StreamCoordinator",
    "SubscriberFactory",
    "ToolFactory",
    "fingerprint",
    "lifecycle_runner",
    "redact",
]
