"""What the scheduler reports about a run: its span, its duration, its log ids.

A run is observed from the moment it is admitted until its handle is done; both ends are
in the scheduler (``RunScheduler._start`` and ``_finish``), in different tasks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping

from webchat.observability.hooks import observe_run_duration
from webchat.observability.logs import log_context
from webchat.observability.tracing import RunSpan
from webchat.sessions import InferenceCancelledError, InferenceHandle
from webchat.turns import BlockKind, Turn

__all__ = ["RunObservation"]


class RunObservation:
    def __init__(
        self,
        conv_id: str,
        inference_id: str,
        profile: str,
        prompt: str,
        *,
        trace_context: Mapping[str, str] | None = None,
    ) -> None:
        """``trace_context``: the W3C headers of the request that queued the run, when it
        was queued (possibly by another process); else the current trace is its parent."""
        self.conv_id = conv_id
        self.inference_id = inference_id
        self.span = RunSpan(conv_id, inference_id, profile, prompt, trace_context)
        self._started = time.monotonic()

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Around the creation of the run's task: the task inherits the span and log ids.
        If the block raises, the run never started (busy, unknown parent): its span ends."""
        try:
            with (
                log_context(conv_id=self.conv_id, inference_id=self.inference_id),
                self.span.activate(),
            ):
                yield
        except BaseException as exc:
            self.span.end("failed", exc)
            raise

    async def end(self, handle: InferenceHandle) -> None:
        """Record how the run ended; ``handle`` is done."""
        status, error, output = "finished", None, ""
        try:
            output = answer_of(await handle.wait())
        except InferenceCancelledError:
            status = "cancelled"
        except Exception as exc:  # the run's own failure, already reported by its frames
            status, error = "failed", exc
        observe_run_duration(time.monotonic() - self._started, status)
        self.span.end(status, error, output)


def answer_of(turn: Turn) -> str:
    """The text this run answered: after the last user block (a turn holds its history)."""
    users = [i for i, block in enumerate(turn.blocks) if block.kind == BlockKind.USER]
    return turn.assistant_text(users[-1] + 1 if users else 0)
