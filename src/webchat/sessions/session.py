"""A session: one conversation's inference history, and at most one inference at a time.

``start_inference`` is synchronous on purpose: the busy check and the claim of the active slot
happen with no ``await`` between them, so two callers on the event loop can never both start a
run. The runner (engine, middlewares, tool loop) is replaceable between runs, which is how a
conversation swaps its engine while keeping its history.

History is a tree of turns (``webchat.sessions.branches``): a run forks the turn it continues,
by default the tip of the current branch, and the engine sees only that turn's transcript.

A run may carry attachments: their references go into the prompt's user block (so history
keeps them), and their bytes, with those of every attachment earlier on the branch, are put
on the input turn in memory (``Turn.attachment_data``) for the engine, and dropped when the
run ends, so a long conversation does not hold every upload it ever had.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from webchat.engines.base import Handler, RunContext, SnapshotHook
from webchat.events import EventSink, new_id
from webchat.sessions import branches
from webchat.sessions.branches import ROOT
from webchat.turns import Block, Turn


class SessionBusyError(RuntimeError):
    """An inference is already running in this session."""

    def __init__(self, inference_id: str) -> None:
        super().__init__(f"an inference is already running ({inference_id})")
        self.inference_id = inference_id


class InferenceCancelledError(RuntimeError):
    """The inference was cancelled before it finished."""


class InferenceHandle:
    """A running (or finished) inference: its ids, a way to wait for it, and to cancel it."""

    def __init__(
        self,
        *,
        session_id: str,
        inference_id: str,
        turn_id: str,
        parent_turn_id: str | None = None,
    ) -> None:
        self.session_id = session_id
        self.inference_id = inference_id
        self.turn_id = turn_id
        self.parent_turn_id = parent_turn_id
        """The turn this run continues, as resolved when it started (``None``: a root)."""
        self._task: asyncio.Task[Turn] | None = None
        # A task cancelled before its first step never runs its body: nothing would be
        # published or recorded. So a cancel that early is held until the run has started.
        self._started = False
        self._cancel_pending = False

    def _attach(self, task: asyncio.Task[Turn]) -> None:
        self._task = task
        # The outcome is always read here, so an unobserved failure is never reported as
        # "exception was never retrieved"; callers still get it from ``wait()``.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def add_done_callback(self, callback: Callable[[InferenceHandle], None]) -> None:
        """Call ``callback(handle)`` once the inference has ended, however it ended."""
        assert self._task is not None
        self._task.add_done_callback(lambda _: callback(self))

    def cancel(self) -> bool:
        """Request cancellation; returns False if the inference had already finished."""
        if self._task is None or self._task.done():
            return False
        if not self._started:
            self._cancel_pending = True
            return True
        return self._task.cancel()

    def _mark_started(self) -> None:
        self._started = True
        if self._cancel_pending and self._task is not None:
            self._task.cancel()  # delivered at the run's first suspension point

    async def wait(self) -> Turn:
        """The resulting turn; raises the run's error, or ``InferenceCancelledError``."""
        assert self._task is not None
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.cancelled():
                raise InferenceCancelledError(
                    f"inference {self.inference_id} was cancelled"
                ) from None
            raise


class Session:
    """History of turns plus the single active inference. See the module docstring."""

    def __init__(
        self,
        runner: Handler,
        *,
        session_id: str | None = None,
        turns: Sequence[Turn] = (),
        sinks: Sequence[EventSink] = (),
        snapshot_hook: SnapshotHook | None = None,
    ) -> None:
        self.runner = runner
        self.session_id = session_id or new_id()
        self.turns: list[Turn] = list(turns)
        branches.link_legacy(self.turns)
        self.sinks: tuple[EventSink, ...] = tuple(sinks)
        self.snapshot_hook = snapshot_hook
        self._active: InferenceHandle | None = None

    @property
    def active(self) -> InferenceHandle | None:
        """The running inference, if any."""
        if self._active is not None and self._active.done:
            return None
        return self._active

    @property
    def is_running(self) -> bool:
        return self.active is not None

    def latest_turn(self) -> Turn | None:
        """The most recently created turn: the tip of the current branch."""
        return branches.tip(self.turns)

    def adopt(self, turns: list[Turn]) -> None:
        """Take ``turns`` (e.g. stored by another process) as the history."""
        branches.link_legacy(turns)
        self.turns = turns

    def parent_for(self, parent_turn_id: str | None) -> Turn | None:
        """The turn a run asked to continue ``parent_turn_id`` forks.

        ``None``: the tip of the current branch (what continuing a chat means); ``ROOT``
        (``""``): none, a new root with no history; otherwise that turn, which may be any
        turn, for a regenerate (the answer's parent) or an edit (the edited message's
        parent). Raises ``UnknownTurnError`` for an id that is not in the history.
        """
        if parent_turn_id is None:
            return self.latest_turn()
        if parent_turn_id == ROOT:
            return None
        return branches.find(self.turns, parent_turn_id)

    def _input_turn(
        self,
        prompt: str,
        turn_id: str,
        parent: Turn | None,
        attachments: Sequence[Mapping[str, Any]] = (),
    ) -> Turn:
        block = Block.user(prompt, [dict(a) for a in attachments])
        turn = parent.fork(block) if parent else Turn(blocks=[block])
        turn.id = turn_id
        turn.metadata.parent_turn_id = parent.id if parent else None
        return turn

    def start_inference(
        self,
        prompt: str,
        *,
        sinks: Sequence[EventSink] | None = None,
        inference_id: str | None = None,
        parent_turn_id: str | None = None,
        attachments: Sequence[Mapping[str, Any]] = (),
        attachment_data: Mapping[str, bytes] | None = None,
    ) -> InferenceHandle:
        """Start a run on ``prompt`` after the history of ``parent_turn_id`` (see
        ``parent_for``; default: the current branch's tip).

        ``attachments``: references (``webchat.chat.attachments.attachment_ref``) the user
        block keeps; ``attachment_data``: the bytes the engine gets, by attachment id.

        Raises ``SessionBusyError`` if a run is active and ``UnknownTurnError`` for an
        unknown parent, both before anything has started.
        """
        active = self.active
        if active is not None:
            raise SessionBusyError(active.inference_id)
        parent = self.parent_for(parent_turn_id)
        handle = InferenceHandle(
            session_id=self.session_id,
            inference_id=inference_id or new_id(),
            turn_id=new_id(),
            parent_turn_id=parent.id if parent else None,
        )
        turn = self._input_turn(prompt, handle.turn_id, parent, attachments)
        turn.set_attachment_data(dict(attachment_data or {}))
        turn.metadata.session_id = self.session_id
        turn.metadata.inference_id = handle.inference_id
        ctx = RunContext(
            sinks=tuple(sinks) if sinks is not None else self.sinks,
            session_id=self.session_id,
            inference_id=handle.inference_id,
            turn_id=handle.turn_id,
            snapshot_hook=self.snapshot_hook,
        )
        self._active = handle
        run = self._run(handle, prompt, turn, parent, ctx, tuple(attachments))
        handle._attach(asyncio.create_task(run))
        return handle

    async def _run(
        self,
        handle: InferenceHandle,
        prompt: str,
        turn: Turn,
        parent: Turn | None,
        ctx: RunContext,
        attachments: Sequence[Mapping[str, Any]] = (),
    ) -> Turn:
        handle._mark_started()
        try:
            result = await self.runner(turn, ctx)
        except asyncio.CancelledError:
            self._record_failure(prompt, parent, ctx, "cancelled", attachments)
            raise
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            self._record_failure(prompt, parent, ctx, error, attachments)
            raise
        finally:
            turn.set_attachment_data({})  # the bytes were for this run only
        result.set_attachment_data({})
        result.metadata.session_id = self.session_id
        result.metadata.inference_id = ctx.inference_id
        # A runner may return a turn of its own making: the link must survive it.
        result.metadata.parent_turn_id = handle.parent_turn_id
        self.turns.append(result)
        return result

    def _record_failure(
        self,
        prompt: str,
        parent: Turn | None,
        ctx: RunContext,
        error: str,
        attachments: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Keep the user's prompt (and its attachments) in history, without partial output,
        and say why it failed; on the same branch, so the prompt stays where it was sent."""
        assert ctx.turn_id is not None
        failed = self._input_turn(prompt, ctx.turn_id, parent, attachments)
        failed.metadata.session_id = self.session_id
        failed.metadata.inference_id = ctx.inference_id
        failed.metadata.error = error
        failed.metadata.stop_reason = "cancelled" if error == "cancelled" else "error"
        self.turns.append(failed)
