"""Sessions: a conversation's history of turns and its single active inference."""

from webchat.sessions.branches import ROOT, UnknownTurnError
from webchat.sessions.session import (
    InferenceCancelledError,
    InferenceHandle,
    Session,
    SessionBusyError,
)
from webchat.sessions.snapshots import DirectorySnapshotHook

__all__ = [
    "ROOT",
    "DirectorySnapshotHook",
    "InferenceCancelledError",
    "InferenceHandle",
    "Session",
    "SessionBusyError",
    "UnknownTurnError",
]
