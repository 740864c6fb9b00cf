"""Which app's observability the code running now reports to.

The moments worth measuring happen deep inside (an engine's first token, a tool call, a
frame leaving for a client), in code that knows nothing of the app it serves. Each app
activates its ``Observability`` in a context variable for its lifespan and for every
request (``webchat.observability.middleware``); the tasks they start copy it, so a hook
called from a run or a client's writer reaches the registry of the app that started them,
and two apps in one process never mix their numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from webchat.observability.metrics import Metrics

__all__ = ["Observability", "activate", "current"]


@dataclass(frozen=True, slots=True)
class Observability:
    """What one app reports to: its metrics, and whether spans may hold prompts and outputs."""

    metrics: Metrics = field(default_factory=Metrics)
    capture_content: bool = False


_current: ContextVar[Observability | None] = ContextVar("webchat_observability", default=None)


def current() -> Observability | None:
    """The active app's observability; None outside any app (a bare ``Session``, the demo)."""
    return _current.get()


@contextlib.contextmanager
def activate(observability: Observability) -> Iterator[None]:
    token = _current.set(observability)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # reset from another context: nothing to undo
            _current.reset(token)
