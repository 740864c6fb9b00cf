"""Log each model call: which turn, how many blocks of which kind, how long, how it ended.

Only ids, counts and durations are logged, never message text, so logs hold no user content.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from webchat.engines.base import Handler, RunContext
from webchat.middleware.base import Middleware
from webchat.turns import Turn


def _kinds(turn: Turn) -> str:
    counts = Counter(b.kind.value for b in turn.blocks)
    return ",".join(f"{kind}={n}" for kind, n in sorted(counts.items()))


def turn_logging_middleware(logger: logging.Logger | None = None) -> Middleware:
    log = logger or logging.getLogger("webchat.turns")

    def wrap(inner: Handler) -> Handler:
        async def handle(turn: Turn, ctx: RunContext) -> Turn:
            started = time.monotonic()
            log.info(
                "model call start turn=%s inference=%s blocks=[%s]",
                turn.id,
                ctx.inference_id,
                _kinds(turn),
            )
            try:
                result = await inner(turn, ctx)
            except BaseException as exc:
                log.warning(
                    "model call failed turn=%s inference=%s after %.0f ms: %s",
                    turn.id,
                    ctx.inference_id,
                    (time.monotonic() - started) * 1000,
                    type(exc).__name__,
                )
                raise
            log.info(
                "model call done turn=%s inference=%s blocks=[%s] stop=%s in %.0f ms",
                result.id,
                ctx.inference_id,
                _kinds(result),
                result.metadata.stop_reason,
                (time.monotonic() - started) * 1000,
            )
            return result

        return handle

    return wrap
