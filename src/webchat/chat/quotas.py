"""Per-user run quotas: runs at once and runs a minute, counted across every process.

A run takes a slot when it is admitted (started or queued) and gives it back when it ends.
Slots are leases (``SLOT_LEASE`` seconds): the slot of a run whose process died frees itself
instead of counting against its user for ever.
"""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as aredis

from webchat.errors import QuotaExceededError
from webchat.transport.redis_client import command_client

__all__ = ["SLOT_LEASE", "LocalRunQuotas", "RedisRunQuotas", "RunQuotas"]

SLOT_LEASE = 3600.0
WINDOW = 60.0
BUSY_RETRY_AFTER = 5.0
"""What a user at the concurrency limit is told to wait: runs end at their own pace."""


class RunQuotas(Protocol):
    async def acquire(self, user: str, run_id: str) -> None:
        """Take a run slot or raise ``QuotaExceededError`` (429) saying what to wait."""
        ...

    async def release(self, user: str, run_id: str) -> None: ...

    async def close(self) -> None: ...


def _refusal(code: int, wait: float, max_active: int, per_minute: int) -> QuotaExceededError:
    if code == 1:
        return QuotaExceededError(
            f"you have {max_active} runs active; wait for one to end",
            retry_after=BUSY_RETRY_AFTER,
        )
    return QuotaExceededError(
        f"you started {per_minute} runs in the last minute; slow down", retry_after=wait
    )


class LocalRunQuotas:
    def __init__(self, *, max_active: int, per_minute: int) -> None:
        self.max_active = max_active
        self.per_minute = per_minute
        self._active: dict[str, dict[str, float]] = {}
        self._recent: dict[str, list[float]] = {}

    async def acquire(self, user: str, run_id: str) -> None:
        now = time.monotonic()
        active = {r: t for r, t in self._active.get(user, {}).items() if t > now}
        recent = [t for t in self._recent.get(user, []) if t > now - WINDOW]
        if len(active) >= self.max_active:
            raise _refusal(1, 0, self.max_active, self.per_minute)
        if len(recent) >= self.per_minute:
            raise _refusal(2, recent[0] + WINDOW - now, self.max_active, self.per_minute)
        active[run_id] = now + SLOT_LEASE
        recent.append(now)
        self._active[user], self._recent[user] = active, recent

    async def release(self, user: str, run_id: str) -> None:
        active = self._active.get(user)
        if active is not None:
            active.pop(run_id, None)
            if not active:
                del self._active[user]

    async def close(self) -> None:
        pass


# KEYS: active slots (score: lease end), recent starts (score: start time).
# ARGV: now, run id, max active, per minute, lease, window. Returns {code, seconds}.
_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[6]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return {1, '0'} end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {2, tostring(tonumber(oldest[2]) + tonumber(ARGV[6]) - now)}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[5])))
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[6])))
return {0, '0'}
"""


class RedisRunQuotas:
    """The same counts in Redis (one atomic script per admission), shared by every process."""

    def __init__(
        self, url: str, *, max_active: int, per_minute: int, prefix: str = "webchat:"
    ) -> None:
        self.max_active = max_active
        self.per_minute = per_minute
        self.prefix = prefix
        self._redis: aredis.Redis = command_client(url)
        self._acquire = self._redis.register_script(_ACQUIRE)

    def _keys(self, user: str) -> list[str]:
        return [f"{self.prefix}quota:active:{user}", f"{self.prefix}quota:recent:{user}"]

    async def acquire(self, user: str, run_id: str) -> None:
        code, wait = await self._acquire(
            keys=self._keys(user),
            args=[time.time(), run_id, self.max_active, self.per_minute, SLOT_LEASE, WINDOW],
        )
        if int(code) != 0:
            raise _refusal(int(code), float(wait), self.max_active, self.per_minute)

    async def release(self, user: str, run_id: str) -> None:
        await self._redis.zrem(self._keys(user)[0], run_id)

    async def close(self) -> None:
        await self._redis.aclose()
