"""Profiles: named recipes (prompt, middlewares, tools, model settings) and overrides."""

from webchat.profiles.models import (
    OVERRIDABLE_SETTINGS,
    BusyPolicy,
    MiddlewareUse,
    Overrides,
    Profile,
    ToolLoopOptions,
)
from webchat.profiles.registry import DEFAULT_SLUG, ProfileFileError, ProfileRegistry

__all__ = [
    "DEFAULT_SLUG",
    "OVERRIDABLE_SETTINGS",
    "BusyPolicy",
    "MiddlewareUse",
    "Overrides",
    "Profile",
    "ProfileFileError",
    "ProfileRegistry",
    "ToolLoopOptions",
]
