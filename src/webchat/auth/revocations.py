"""Logged-out session ids, kept until their cookie would have expired anyway."""

from __future__ import annotations

import time

import redis.asyncio as aredis

from webchat.transport.redis_client import command_client

__all__ = ["LocalRevocations", "RedisRevocations"]


class LocalRevocations:
    """In this process. A restart forgets them: a logged-out cookie copied before its
    log-out would work again until it expires (use Redis to rule that out)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    async def revoke_session(self, session_id: str, ttl: float) -> None:
        now = time.monotonic()
        self._until = {sid: t for sid, t in self._until.items() if t > now}
        self._until[session_id] = now + ttl

    async def session_revoked(self, session_id: str) -> bool:
        until = self._until.get(session_id)
        return until is not None and until > time.monotonic()

    async def close(self) -> None:
        pass


class RedisRevocations:
    """In Redis, so a log-out on one process holds on every process."""

    def __init__(self, url: str, *, prefix: str = "webchat:") -> None:
        self.prefix = prefix
        self._redis: aredis.Redis = command_client(url)

    async def revoke_session(self, session_id: str, ttl: float) -> None:
        await self._redis.set(f"{self.prefix}logout:{session_id}", "1", ex=max(1, int(ttl) + 1))

    async def session_revoked(self, session_id: str) -> bool:
        return bool(await self._redis.exists(f"{self.prefix}logout:{session_id}"))

    async def close(self) -> None:
        await self._redis.aclose()
