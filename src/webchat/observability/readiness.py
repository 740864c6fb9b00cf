"""``/readyz``: can this process serve requests now — is its store answering, and Redis?

``/healthz`` says the process is alive; a load balancer should send traffic only where
``/readyz`` says ready, and a process whose store or Redis is away is alive but not ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel

from webchat.storage import Store

__all__ = ["CHECK_TIMEOUT", "PROBE_CONV_ID", "Readiness", "check_readiness"]

log = logging.getLogger("webchat.server")

CHECK_TIMEOUT = 2.0
"""Seconds each check may take before it counts as down."""
PROBE_CONV_ID = "readyz-probe"
"""A conversation id the store is asked about (a read: it need not exist)."""


class Readiness(BaseModel):
    """The body of ``/readyz``: ``ready`` or ``unavailable``, each check's state (``ok`` or
    ``down``) and, when not ready, the API's usual ``error`` saying why."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, Literal["ok", "down"]]
    error: str | None = None


async def _store_ok(store: Store) -> None:
    await store.get_conversation(PROBE_CONV_ID)


async def _redis_ok(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=CHECK_TIMEOUT)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _check(name: str, probe: Awaitable[None]) -> str | None:
    """None when ``probe`` (an awaitable) completes in time, else why not."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await probe
    except TimeoutError:
        return f"{name}: no answer within {CHECK_TIMEOUT:g}s"
    except Exception as exc:
        # The type only: a driver's message may quote a URL with its password.
        log.warning("readiness: %s is down (%s)", name, type(exc).__name__)
        return f"{name}: unavailable ({type(exc).__name__})"
    return None


async def check_readiness(store: Store, redis_url: str | None) -> Readiness:
    """Check the store, and Redis when the deployment uses it (``redis_url``)."""
    probes: dict[str, Coroutine[Any, Any, None]] = {"store": _store_ok(store)}
    if redis_url is not None:
        probes["redis"] = _redis_ok(redis_url)
    results = await asyncio.gather(*(_check(name, p) for name, p in probes.items()))
    problems = dict(zip(probes, results, strict=True))
    checks: dict[str, Literal["ok", "down"]] = {
        name: "ok" if problem is None else "down" for name, problem in problems.items()
    }
    reasons = [problem for problem in problems.values() if problem is not None]
    if reasons:
        return Readiness(status="unavailable", checks=checks, error="; ".join(reasons))
    return Readiness(status="ready", checks=checks)
