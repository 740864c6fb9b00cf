"""Sessions: a conversation's history of turns and its single active inference."""

from webchat.sessions.session import (
    InferenceCancelledError,
    InferenceHandle,
    Session,
    SessionBusyError,
)
from webchat.sessions.snapshots import DirectorySnapshotHook

__all__ = [
    "DirectorySnapshotHook",
    "InferenceCancelledError",
    "InferenceHandle",
    "Session",
    "SessionBusyError",
]
