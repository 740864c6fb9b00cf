"""Middlewares wrap a handler (engine or chain) and return a handler.

``compose`` applies a list so that the first listed is the outermost: it sees the turn first on
the way in and last on the way out. The chain runs on every model call of the tool loop, so
middlewares must be idempotent across iterations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from webchat.engines.base import Handler

Middleware = Callable[[Handler], Handler]


def compose(handler: Handler, middlewares: Sequence[Middleware]) -> Handler:
    for middleware in reversed(middlewares):
        handler = middleware(handler)
    return handler
