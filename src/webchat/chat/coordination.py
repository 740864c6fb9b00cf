"""Who may run what, across every process serving a deployment.

``ChatService`` asks one ``Coordination`` for the run lock of a conversation, its queue of
waiting runs, idempotency keys and cancel requests. ``LocalCoordination`` keeps all of it in
this process; ``RedisCoordination`` keeps it in Redis so several processes behind a load
balancer behave as one server:

- the run lock is a key with a lease (``SET NX PX``) that its owner renews; a process that
  dies stops renewing, the lease expires, and a reaper on any process closes the dangling
  run with ``run.failed`` (exactly once: the reap is an atomic check-and-delete);
- cancel requests are published on a channel every process listens to, so the process that
  runs the inference cancels it;
- queues and idempotency keys are Redis lists and keys.

An idempotency key is bound to the request that first used it: its fingerprint (a hash of
method, path, canonical body and resolved profile, computed by the caller) is stored with the
response, and the same key with another fingerprint is refused with
``IdempotencyKeyReusedError`` instead of being answered with someone else's response.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import redis.asyncio as aredis
import redis.exceptions

from webchat.errors import IdempotencyKeyReusedError
from webchat.transport.redis_client import command_client

log = logging.getLogger("webchat.coordination")

CancelHandler = Callable[[str, str], None]
"""(conv_id, inference_id): cancel that run if it runs here."""
OrphanHandler = Callable[[str, str], Awaitable[None]]
"""(conv_id, inference_id): the run's process died; close it for the clients."""


@dataclass(slots=True)
class PendingRun:
    """A run request waiting for the active run of its conversation to end."""

    profile_slug: str
    prompt: str
    overrides: dict[str, Any] | None
    inference_id: str
    parent_turn_id: str | None = None
    """The turn the run continues, as requested (``None``: the tip when it starts). Last and
    defaulted, so entries queued in Redis before branches existed still decode."""
    attachments: list[str] = field(default_factory=list)
    """Ids of the run's attachments (their bytes are loaded when it starts, not queued).
    Defaulted, so entries queued before attachments existed still decode."""
    trace_context: dict[str, str] = field(default_factory=dict)
    """W3C trace context (``traceparent``) of the request that queued the run, so the
    process that starts it continues that trace (``webchat.observability.tracing``)."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _KeyUse:
    """The request an idempotency key belongs to, and its response once it has one."""

    fingerprint: str
    response: asyncio.Future[StoredResponse]


def request_fingerprint(request_line: str, profile_slug: str, body: Any) -> str:
    """What binds an idempotency key to its request: sha256 of the method and path
    (``request_line``), the profile the request resolves to and the canonical JSON body (keys
    sorted, so spacing and key order do not make two requests differ)."""
    canonical = json.dumps(
        {"request": request_line, "profile": profile_slug, "body": body},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Coordination(Protocol):
    async def start(self, on_cancel: CancelHandler, on_orphan: OrphanHandler) -> None: ...
    async def close(self) -> None: ...
    async def try_lock(self, conv_id: str, inference_id: str) -> str | None:
        """Take the run lock; ``None`` when taken, else the running inference's id."""
        ...

    async def unlock(self, conv_id: str, inference_id: str) -> None: ...
    async def holder(self, conv_id: str) -> str | None: ...
    async def request_cancel(self, conv_id: str, inference_id: str) -> None: ...
    async def hand_over(self, conv_id: str, from_inference: str, to_inference: str) -> bool:
        """Pass a held lock straight to the next run, so no other request slips in between."""
        ...

    async def enqueue(self, conv_id: str, pending: PendingRun) -> int: ...
    async def requeue(self, conv_id: str, pending: PendingRun) -> None:
        """Put a run back at the head of its queue (it could not start yet)."""
        ...

    async def dequeue(self, conv_id: str) -> PendingRun | None: ...
    async def queue_length(self, conv_id: str) -> int: ...
    async def clear_queues(self) -> None: ...
    async def claim(self, key: str, fingerprint: str) -> StoredResponse | None:
        """Claim an idempotency key for the request ``fingerprint`` identifies: ``None`` if
        this request is the first with it, else the first request's response (waiting for it
        if that request is still being handled). Raises ``IdempotencyKeyReusedError`` when the
        key belongs to a request with another fingerprint."""
        ...

    async def settle(self, key: str, fingerprint: str, response: StoredResponse) -> None: ...


class LocalCoordination:
    """Everything in this process: the embedded default."""

    def __init__(self, keys_kept: int = 10_000) -> None:
        self.keys_kept = keys_kept
        self._locks: dict[str, str] = {}
        self._queues: dict[str, deque[PendingRun]] = {}
        # Requests still being handled, then (bounded, oldest dropped first) settled ones. A key
        # in flight is never dropped: its waiters would wait forever.
        self._in_flight: dict[str, _KeyUse] = {}
        self._settled: OrderedDict[str, _KeyUse] = OrderedDict()
        self._on_cancel: CancelHandler | None = None

    async def start(self, on_cancel: CancelHandler, on_orphan: OrphanHandler) -> None:
        self._on_cancel = on_cancel

    async def close(self) -> None:
        for use in self._in_flight.values():
            use.response.cancel()
        self._in_flight.clear()

    async def try_lock(self, conv_id: str, inference_id: str) -> str | None:
        holder = self._locks.get(conv_id)
        if holder is not None and holder != inference_id:
            return holder
        self._locks[conv_id] = inference_id
        return None

    async def unlock(self, conv_id: str, inference_id: str) -> None:
        if self._locks.get(conv_id) == inference_id:
            del self._locks[conv_id]

    async def holder(self, conv_id: str) -> str | None:
        return self._locks.get(conv_id)

    async def hand_over(self, conv_id: str, from_inference: str, to_inference: str) -> bool:
        if self._locks.get(conv_id) != from_inference:
            return False
        self._locks[conv_id] = to_inference
        return True

    async def request_cancel(self, conv_id: str, inference_id: str) -> None:
        if self._on_cancel is not None:
            self._on_cancel(conv_id, inference_id)

    async def enqueue(self, conv_id: str, pending: PendingRun) -> int:
        queue = self._queues.setdefault(conv_id, deque())
        queue.append(pending)
        return len(queue)

    async def requeue(self, conv_id: str, pending: PendingRun) -> None:
        self._queues.setdefault(conv_id, deque()).appendleft(pending)

    async def dequeue(self, conv_id: str) -> PendingRun | None:
        queue = self._queues.get(conv_id)
        return queue.popleft() if queue else None

    async def queue_length(self, conv_id: str) -> int:
        return len(self._queues.get(conv_id, ()))

    async def clear_queues(self) -> None:
        self._queues.clear()

    async def claim(self, key: str, fingerprint: str) -> StoredResponse | None:
        use = self._in_flight.get(key) or self._settled.get(key)
        if use is None:
            future = asyncio.get_running_loop().create_future()
            self._in_flight[key] = _KeyUse(fingerprint, future)
            return None
        if use.fingerprint != fingerprint:
            raise IdempotencyKeyReusedError()
        return await asyncio.shield(use.response)

    async def settle(self, key: str, fingerprint: str, response: StoredResponse) -> None:
        use = self._in_flight.pop(key, None)
        if use is None or use.fingerprint != fingerprint:
            use = _KeyUse(fingerprint, asyncio.get_running_loop().create_future())
        if not use.response.done():
            use.response.set_result(response)
        self._settled[key] = use
        self._settled.move_to_end(key)
        while len(self._settled) > self.keys_kept:
            self._settled.popitem(last=False)


# Renew only our own lease; release only our own lock. A lock that is gone altogether (Redis
# restarted empty while we run) is taken back, with its marker, so no other run slips in.
_RENEW = """
local held = redis.call('get', KEYS[1])
if held == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
if not held then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('set', KEYS[2], ARGV[3], 'NX')
  return 2
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
if redis.call('get', KEYS[2]) == ARGV[2] then redis.call('del', KEYS[2]) end
return 1
"""
# A run is orphaned when its lease is gone but its "active" marker remains: delete the marker
# atomically so exactly one process reports it.
_REAP = """
if redis.call('exists', KEYS[1]) == 0 and redis.call('get', KEYS[2]) == ARGV[1] then
  redis.call('del', KEYS[2])
  return 1
end
return 0
"""
# Pass our lock (and the active marker) to the next run of the same conversation.
_HAND_OVER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[4])
  redis.call('set', KEYS[2], ARGV[3])
  return 1
end
return 0
"""


class RedisCoordination:
    """Coordination through Redis; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "webchat:",
        lease_ms: int = 10_000,
        reap_every: float = 2.0,
        idempotency_ttl: int = 86_400,
        idempotency_pending_ttl: int = 60,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.lease_ms = lease_ms
        self.reap_every = reap_every
        self.idempotency_ttl = idempotency_ttl
        self.idempotency_pending_ttl = idempotency_pending_ttl
        """Seconds a claimed key waits for its response: a claim whose process died frees
        the key after this, for a retry to be handled rather than wait forever."""
        self.owner = uuid.uuid4().hex[:12]
        self._redis: aredis.Redis | None = None
        self._held: dict[str, str] = {}  # conv_id -> lock value
        # A renewal must never land after the release of the same lock: it would take it back.
        self._lease_guard = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._on_cancel: CancelHandler | None = None
        self._on_orphan: OrphanHandler | None = None

    @property
    def redis(self) -> aredis.Redis:
        if self._redis is None:
            raise RuntimeError("coordination is not started")
        return self._redis

    def _key(self, kind: str, conv_id: str = "") -> str:
        return f"{self.prefix}{kind}{conv_id}"

    async def _call(self, command: str, *args: Any) -> Any:
        """Run a command by name: redis-py's wide return unions say nothing useful here."""
        return await getattr(self.redis, command)(*args)

    async def start(self, on_cancel: CancelHandler, on_orphan: OrphanHandler) -> None:
        self._on_cancel, self._on_orphan = on_cancel, on_orphan
        # One retry on a fresh connection: after Redis restarts, every pooled connection is
        # dead, and redis-py (RESP3) hands them out unchecked.
        self._redis = command_client(self.url)
        self._tasks = [
            asyncio.create_task(self._renew_loop(), name="run-lease-renewal"),
            asyncio.create_task(self._reap_loop(), name="run-reaper"),
            asyncio.create_task(self._cancel_listener(), name="cancel-listener"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._redis is not None:
            for conv_id, value in list(self._held.items()):
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    await self._release(conv_id, value)
            await self._redis.aclose()
            self._redis = None

    # -- run lock --------------------------------------------------------------------------

    async def try_lock(self, conv_id: str, inference_id: str) -> str | None:
        value = f"{self.owner}|{inference_id}"
        key = self._key("run:", conv_id)
        while not await self.redis.set(key, value, nx=True, px=self.lease_ms):
            holder = await self.holder(conv_id)
            if holder == inference_id:
                break  # our SET was applied but its reply lost, then retried
            if holder is not None:
                return holder
            # Released between the two commands: the lock is free now, try again.
        self._held[conv_id] = value
        # A marker that outlives a crashed owner's lease, so its run can be closed.
        previous = await self.redis.getset(self._key("active:", conv_id), inference_id)
        if previous is not None and _text(previous) != inference_id and self._on_orphan:
            await self._on_orphan(conv_id, _text(previous))
        return None

    async def unlock(self, conv_id: str, inference_id: str) -> None:
        async with self._lease_guard:
            value = self._held.pop(conv_id, None)
            if value is not None:
                await self._release(conv_id, value)

    async def _release(self, conv_id: str, value: str) -> None:
        inference_id = value.split("|", 1)[1]
        await self._call(
            "eval",
            _RELEASE,
            2,
            self._key("run:", conv_id),
            self._key("active:", conv_id),
            value,
            inference_id,
        )

    async def holder(self, conv_id: str) -> str | None:
        value = await self.redis.get(self._key("run:", conv_id))
        return _text(value).split("|", 1)[1] if value else None

    async def hand_over(self, conv_id: str, from_inference: str, to_inference: str) -> bool:
        old, new = f"{self.owner}|{from_inference}", f"{self.owner}|{to_inference}"
        moved = await self._call(
            "eval",
            _HAND_OVER,
            2,
            self._key("run:", conv_id),
            self._key("active:", conv_id),
            old,
            new,
            to_inference,
            self.lease_ms,
        )
        if moved:
            self._held[conv_id] = new
        return bool(moved)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            for conv_id in list(self._held):
                try:
                    async with self._lease_guard:
                        value = self._held.get(conv_id)
                        if value is None:
                            continue
                        kept = await self._call(
                            "eval",
                            _RENEW,
                            2,
                            self._key("run:", conv_id),
                            self._key("active:", conv_id),
                            value,
                            self.lease_ms,
                            value.split("|", 1)[1],
                        )
                except (redis.exceptions.RedisError, OSError) as exc:
                    log.warning("could not renew the run lease of %s: %s", conv_id, exc)
                    continue
                if not kept:
                    log.error("run lease of %s was lost", conv_id)
                elif kept == 2:
                    log.warning("run lock of %s had vanished from redis; taken back", conv_id)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reap_every)
            try:
                await self.reap()
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("reaper could not reach redis: %s", exc)

    async def reap(self) -> list[tuple[str, str]]:
        """Close every run whose owner stopped renewing its lease; returns what was reaped."""
        reaped = []
        marker_prefix = self._key("active:")
        async for key in self.redis.scan_iter(match=marker_prefix + "*", count=500):
            conv_id = _text(key)[len(marker_prefix) :]
            inference = await self.redis.get(key)
            if inference is None:
                continue
            won = await self._call("eval", _REAP, 2, self._key("run:", conv_id), key, inference)
            if won:
                reaped.append((conv_id, _text(inference)))
                if self._on_orphan is not None:
                    await self._on_orphan(conv_id, _text(inference))
        return reaped

    # -- cancel ----------------------------------------------------------------------------

    async def request_cancel(self, conv_id: str, inference_id: str) -> None:
        message = json.dumps({"conv_id": conv_id, "inference_id": inference_id})
        await self.redis.publish(self._key("cancel"), message)

    async def _cancel_listener(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._key("cancel"))
                    backoff = 0.1
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = json.loads(message["data"])
                        if self._on_cancel is not None:
                            self._on_cancel(str(data["conv_id"]), str(data["inference_id"]))
            except (redis.exceptions.RedisError, OSError, ValueError) as exc:
                log.warning("cancel listener lost redis (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    # -- queues ----------------------------------------------------------------------------

    async def enqueue(self, conv_id: str, pending: PendingRun) -> int:
        return int(
            await self._call("rpush", self._key("queue:", conv_id), json.dumps(asdict(pending)))
        )

    async def requeue(self, conv_id: str, pending: PendingRun) -> None:
        await self._call("lpush", self._key("queue:", conv_id), json.dumps(asdict(pending)))

    async def dequeue(self, conv_id: str) -> PendingRun | None:
        raw = await self._call("lpop", self._key("queue:", conv_id))
        return PendingRun(**json.loads(raw)) if raw else None

    async def queue_length(self, conv_id: str) -> int:
        return int(await self._call("llen", self._key("queue:", conv_id)))

    async def clear_queues(self) -> None:
        """Queued runs belong to the deployment, not to this process: nothing to clear."""

    # -- idempotency -----------------------------------------------------------------------

    async def claim(self, key: str, fingerprint: str) -> StoredResponse | None:
        redis_key = self._key("idem:", key)
        pending = json.dumps({"fingerprint": fingerprint})
        deadline = time.monotonic() + 30
        while True:
            if await self.redis.set(redis_key, pending, nx=True, ex=self.idempotency_pending_ttl):
                return None
            value = await self.redis.get(redis_key)
            if value is None:
                continue  # expired or released between the two commands: claim it again
            stored_fingerprint, response = _decode_key_use(value)
            if stored_fingerprint != fingerprint:
                raise IdempotencyKeyReusedError()
            if response is not None:
                return response
            if time.monotonic() > deadline:
                return None  # the first request is stuck: handle this one
            await asyncio.sleep(0.05)

    async def settle(self, key: str, fingerprint: str, response: StoredResponse) -> None:
        value = json.dumps({"fingerprint": fingerprint, **asdict(response)})
        await self.redis.set(self._key("idem:", key), value, ex=self.idempotency_ttl)


def _decode_key_use(value: Any) -> tuple[str | None, StoredResponse | None]:
    """(fingerprint, response) of a stored idempotency key; a value this version cannot
    read has no fingerprint, so no request matches it."""
    try:
        data = json.loads(value)
        fingerprint = data.get("fingerprint") if isinstance(data, dict) else None
        if not isinstance(fingerprint, str):
            return None, None
        if "status_code" not in data:
            return fingerprint, None
        headers = data.get("headers") or {}
        return fingerprint, StoredResponse(
            int(data["status_code"]),
            dict(data["body"]),
            {str(k): str(v) for k, v in headers.items()},
        )
    except (ValueError, TypeError, KeyError):
        return None, None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
