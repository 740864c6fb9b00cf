"""A conversation store in Redis, shared by every server process of a deployment.

Same contract as the SQLite store: writes only queue (a writer task applies them in pipelined
batches), reads first wait for the caller's earlier writes. While Redis is unreachable the
writer keeps its queue and retries with backoff, so a frame that was handed to the store is
written once Redis is back. Several processes may write the same frame: frames are keyed by
seq and written only if absent, so duplicates are harmless.

Owner claims are not queued: ``claim_owner`` runs one Lua script (atomic across every process)
and answers with the winner. They have no TTL, so they last as long as Redis keeps its data.

Keys (``{p}`` is the prefix, ``webchat:`` by default):
``{p}conv:<id>`` record JSON · ``{p}convs`` sorted set by updated time ·
``{p}convs:owner:<owner>`` the same, per record owner ·
``{p}owner:<id>`` the claimed owner · ``{p}turns:<id>`` hash index -> turn JSON ·
``{p}frames:<id>`` hash seq -> frame JSON · ``{p}fseq:<id>`` sorted set of frame seqs ·
``{p}title:<id>`` a renamed title · ``{p}text:<id>`` hash index -> the turn's search text ·
``{p}feedback:<id>`` hash turn id -> feedback JSON · ``{p}feedback:counts`` hash rating -> how
many stored answers have it · ``{p}att:<id>:<attachment id>`` hash ``record`` (JSON) and
``data`` (the bytes) · ``{p}atts:<id>`` sorted set of attachment ids by upload time.

Records saved before ownership existed are in no ``convs:owner:`` set (not even the one for
``""``) until they are saved again.

A renamed title lives in its own key and is laid over the record's when read: a process that
loaded the conversation before the rename saves the record with the old title, and must not
undo the rename.

Search has no index here: ``search_conversations`` scans the owner's conversations (everyone's
for an admin), newest first, comparing every query word as a case-insensitive substring of the
title and of each turn's search text, until it has ``limit`` matches or has looked at
``SEARCH_SCAN_MAX`` conversations. Fine for a person's history; for a deployment's full
history, use the SQLite store's FTS5 (or RediSearch, which this store does not require).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aredis
import redis.exceptions

from webchat.storage.base import (
    AttachmentRecord,
    ConversationRecord,
    Feedback,
    Rating,
    check_owner,
    make_feedback,
)
from webchat.storage.search import search_terms, text_matches, turn_search_text
from webchat.transport.redis_client import command_client
from webchat.turns.models import Turn

if TYPE_CHECKING:
    from webchat.conversation.frames import Frame

log = logging.getLogger("webchat.storage")

Op = Callable[[Any], None]  # adds commands to a pipeline

_TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

SEARCH_BATCH = 200
"""Conversations a search reads per round trip."""
SEARCH_SCAN_MAX = 10_000
"""The most conversations one search looks at (newest first)."""

# Saving a record moves it between per-owner sets when its owner changes, so an owner's set
# (and its count) never keeps a conversation that is no longer theirs. A script, because the
# old owner is only known by reading the old record, and the read and the writes must not
# interleave with another process's save. The owner sets are named from ARGV (their prefix +
# owner): fine on a single Redis, which is what this store supports.
# KEYS: record, global index, new owner's index; ARGV: record JSON, updated_at, conv_id,
# owner-index prefix, owner.
_SAVE_CONVERSATION = """
local old = redis.call('GET', KEYS[1])
if old then
  local ok, record = pcall(cjson.decode, old)
  local previous = ''
  if ok and type(record) == 'table' and type(record.owner) == 'string' then
    previous = record.owner
  end
  if previous ~= ARGV[5] then
    redis.call('ZREM', ARGV[4] .. previous, ARGV[3])
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return 1
"""

# First claim wins; a record already saved with an owner counts as that owner's claim.
# Idempotent, so redis-py's one retry after a dropped connection cannot change the answer.
# KEYS: owner claim, record; ARGV: claimant.
_CLAIM_OWNER = """
local current = redis.call('GET', KEYS[1])
if current then
  return current
end
local owner = ARGV[1]
local text = redis.call('GET', KEYS[2])
if text then
  local ok, record = pcall(cjson.decode, text)
  if ok and type(record) == 'table' and type(record.owner) == 'string' and record.owner ~= '' then
    owner = record.owner
  end
end
redis.call('SET', KEYS[1], owner)
return owner
"""


# Feedback replaces the turn's earlier feedback and moves the rating counts by the difference,
# in one script, so concurrent saves from several processes keep the counts exact.
# KEYS: the conversation's feedback hash, the counts hash; ARGV: turn id, feedback JSON ('' to
# remove it), its rating ('' for none).
_SAVE_FEEDBACK = """
local previous = ''
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ok, feedback = pcall(cjson.decode, old)
  if ok and type(feedback) == 'table' and type(feedback.rating) == 'string' then
    previous = feedback.rating
  end
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
if previous ~= ARGV[3] then
  if previous ~= '' then redis.call('HINCRBY', KEYS[2], previous, -1) end
  if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[3], 1) end
end
return 1
"""

# Every key of a conversation but its owner claim (see ``Store.delete_conversation``), and its
# place in the global and per-owner indexes; its feedback leaves the counts. One script, so no
# other process's save lands half way. Returns 1 if a record existed.
# KEYS: record, global index, owner claim, feedback counts, then the keys deleted outright
# (turns, text, frames, fseq, title, feedback: the last one); ARGV: conv_id, owner-index prefix,
# attachment index, attachment key prefix (the attachments' own keys are named from ARGV, as
# the owner sets are: fine on a single Redis).
_DELETE_CONVERSATION = """
local owners = {}
local text = redis.call('GET', KEYS[1])
if text then
  local ok, record = pcall(cjson.decode, text)
  if ok and type(record) == 'table' and type(record.owner) == 'string' then
    owners[#owners + 1] = record.owner
  end
end
local claimed = redis.call('GET', KEYS[3])
if claimed then owners[#owners + 1] = claimed end
for _, owner in ipairs(owners) do
  redis.call('ZREM', ARGV[2] .. owner, ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
for _, value in ipairs(redis.call('HVALS', KEYS[#KEYS])) do
  local ok, feedback = pcall(cjson.decode, value)
  if ok and type(feedback) == 'table' and type(feedback.rating) == 'string' then
    redis.call('HINCRBY', KEYS[4], feedback.rating, -1)
  end
end
for _, id in ipairs(redis.call('ZRANGE', ARGV[3], 0, -1)) do
  redis.call('DEL', ARGV[4] .. id)
end
redis.call('DEL', ARGV[3])
redis.call('DEL', KEYS[1], unpack(KEYS, 5))
if text then return 1 end
return 0
"""


# Frames are written only if absent (another process may have written the same seq).
# KEYS: frames hash, seq index; ARGV: seq, frame JSON, seq, frame JSON, ...
_APPEND_FRAMES = """
local members = {}
for i = 1, #ARGV, 2 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  members[#members + 1] = ARGV[i]
  members[#members + 1] = ARGV[i]
end
redis.call('ZADD', KEYS[2], 'NX', unpack(members))
return 0
"""
_FRAMES_PER_CALL = 1000
"""Frames per script call: Lua's ``unpack`` has a bounded stack (~8,000 values)."""


@dataclass(slots=True)
class _Frames:
    conv_id: str
    rows: list[tuple[bytes, str]]


class RedisStore:
    def __init__(self, url: str, *, prefix: str = "webchat:", batch_size: int = 500) -> None:
        self.url = url
        self.prefix = prefix
        self.batch_size = batch_size
        self._redis: aredis.Redis | None = None
        self._ops: deque[Op | _Frames] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._applied = 0
        self._errors = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def redis(self) -> aredis.Redis:
        if self._redis is None:
            raise RuntimeError("the store is not open")
        return self._redis

    async def open(self) -> None:
        if self._redis is None:
            self._redis = command_client(self.url)
            self._writer = asyncio.create_task(self._write_loop(), name="redis-store-writer")

    async def close(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await self.flush()
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._redis is not None:
            await self._redis.aclose()

    # -- writes (queue only) ---------------------------------------------------------------

    def _queue(self, op: Op | _Frames) -> None:
        if self._closed:
            self._errors += 1
            return
        self._ops.append(op)
        self._idle.clear()
        self._wake.set()

    def save_conversation(self, record: ConversationRecord) -> None:
        owner_prefix = self._key("convs:owner:")
        keys = (
            self._key("conv:", record.conv_id),
            self._key("convs"),
            owner_prefix + record.owner,
        )
        args = (
            record.model_dump_json(),
            repr(record.updated_at),  # repr: the exact float, as ZADD parses it
            record.conv_id,
            owner_prefix,
            record.owner,
        )
        self._queue(lambda pipe: pipe.eval(_SAVE_CONVERSATION, len(keys), *keys, *args))

    def append_frames(self, conv_id: str, frames: Sequence[Frame]) -> None:
        if not frames:
            return
        # Data, not a pipeline callback: the writer merges a batch's frames per conversation.
        self._queue(_Frames(conv_id, [(str(f.seq).encode(), f.json) for f in frames]))

    def delete_frames(self, conv_id: str, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        members = [str(seq) for seq in seqs]
        frames_key, seqs_key = self._key("frames:", conv_id), self._key("fseq:", conv_id)

        def op(pipe: Any) -> None:
            pipe.hdel(frames_key, *members)
            pipe.zrem(seqs_key, *members)

        self._queue(op)

    def save_turn(self, conv_id: str, index: int, turn: Turn) -> None:
        key, text = self._key("turns:", conv_id), turn.model_dump_json()  # snapshot now
        text_key, search_text = self._key("text:", conv_id), turn_search_text(turn)

        def op(pipe: Any) -> None:
            pipe.hset(key, str(index), text)
            pipe.hset(text_key, str(index), search_text)

        self._queue(op)

    def rename_conversation(self, conv_id: str, title: str) -> None:
        key = self._key("title:", conv_id)
        self._queue(lambda pipe: pipe.set(key, title))

    def save_feedback(
        self, conv_id: str, turn_id: str, rating: Rating | None, comment: str | None
    ) -> Feedback | None:
        feedback = make_feedback(rating, comment)
        keys = (self._key("feedback:", conv_id), self._key("feedback:counts"))
        text = "" if feedback is None else feedback.model_dump_json()
        args = (turn_id, text, (feedback.rating or "") if feedback is not None else "")
        self._queue(lambda pipe: pipe.eval(_SAVE_FEEDBACK, len(keys), *keys, *args))
        return feedback

    async def flush(self) -> None:
        """Return once everything queued so far is in Redis."""
        await self._idle.wait()

    async def _write_loop(self) -> None:
        backoff = 0.1
        while True:
            if not self._ops:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._ops[i] for i in range(min(self.batch_size, len(self._ops)))]
            try:
                pipe = self.redis.pipeline(transaction=False)
                # A run of frame appends (of any conversations) is merged, and written before
                # the next other write, which may depend on them (a delete of some of them).
                frames: dict[str, list[tuple[bytes, str]]] = {}
                for op in batch:
                    if isinstance(op, _Frames):
                        frames.setdefault(op.conv_id, []).extend(op.rows)
                        continue
                    self._add_frames(pipe, frames)
                    op(pipe)
                self._add_frames(pipe, frames)
                await pipe.execute()
            except _TRANSIENT as exc:
                log.warning("redis store unreachable (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except redis.exceptions.RedisError:
                log.exception("redis store batch failed; %d writes dropped", len(batch))
                self._errors += len(batch)
            else:
                self._applied += len(batch)
                backoff = 0.1
            for _ in batch:
                self._ops.popleft()

    def _add_frames(self, pipe: Any, frames: dict[str, list[tuple[bytes, str]]]) -> None:
        """One script call per conversation and chunk, not two commands per frame; empties
        ``frames``."""
        for conv_id, rows in frames.items():
            keys = (self._key("frames:", conv_id), self._key("fseq:", conv_id))
            for start in range(0, len(rows), _FRAMES_PER_CALL):
                args = [item for row in rows[start : start + _FRAMES_PER_CALL] for item in row]
                pipe.eval(_APPEND_FRAMES, 2, *keys, *args)
        frames.clear()

    # -- reads -----------------------------------------------------------------------------

    def _key(self, kind: str, conv_id: str = "") -> str:
        return f"{self.prefix}{kind}{conv_id}"

    async def get_conversation(self, conv_id: str) -> ConversationRecord | None:
        await self.flush()
        text, title = await self.redis.mget(
            [self._key("conv:", conv_id), self._key("title:", conv_id)]
        )
        if text is None:
            return None
        record = _record(text, title)
        return record.model_copy(
            update={"last_seq": max(record.last_seq, await self._max_seq(conv_id))}
        )

    async def list_conversations(
        self, *, limit: int = 100, offset: int = 0, owner: str | None = None
    ) -> list[ConversationRecord]:
        """Newest activity first; only ``owner``'s records when given."""
        await self.flush()
        if limit <= 0:
            return []  # ZREVRANGE with stop = offset - 1 would mean "to the end"
        index = self._key("convs") if owner is None else self._key("convs:owner:", owner)
        ids = await self.redis.zrevrange(index, offset, offset + limit - 1)
        if not ids:
            return []
        keys = [self._key(kind, _text(i)) for i in ids for kind in ("conv:", "title:")]
        values = await self.redis.mget(keys)
        return [
            _record(text, title)
            for text, title in zip(values[::2], values[1::2], strict=True)
            if text is not None
        ]

    async def count_conversations(self, owner: str) -> int:
        await self.flush()
        return int(await self.redis.zcard(self._key("convs:owner:", owner)))

    async def claim_owner(self, conv_id: str, owner: str) -> str:
        check_owner(owner)
        await self.flush()  # a record the caller saved first counts as a claim
        keys = (self._key("owner:", conv_id), self._key("conv:", conv_id))
        winner = await self.redis.eval(_CLAIM_OWNER, len(keys), *keys, owner)
        return _text(winner)

    async def owner_of(self, conv_id: str) -> str | None:
        await self.flush()
        claimed = await self.redis.get(self._key("owner:", conv_id))
        if claimed is not None:
            return _text(claimed)
        text = await self.redis.get(self._key("conv:", conv_id))
        if text is None:
            return None
        return ConversationRecord.model_validate_json(text).owner or None

    async def load_turns(self, conv_id: str) -> list[Turn]:
        await self.flush()
        rows = await self.redis.hgetall(self._key("turns:", conv_id))
        ordered = sorted(rows.items(), key=lambda item: int(item[0]))
        return [Turn.model_validate_json(text) for _, text in ordered]

    async def frames_since(
        self, conv_id: str, seq: int, *, limit: int = 10_000
    ) -> list[tuple[int, str]]:
        await self.flush()
        seqs: list[Any] = await self.redis.zrangebyscore(
            self._key("fseq:", conv_id), f"({seq}", "+inf", start=0, num=limit
        )
        if not seqs:
            return []
        texts: list[Any] = await self.redis.hmget(self._key("frames:", conv_id), seqs)
        return [
            (int(_text(s)), _text(t)) for s, t in zip(seqs, texts, strict=True) if t is not None
        ]

    async def delete_conversation(self, conv_id: str) -> bool:
        await self.flush()  # the caller's queued writes come first, and are deleted too
        keys = [
            self._key("conv:", conv_id),
            self._key("convs"),
            self._key("owner:", conv_id),
            self._key("feedback:counts"),
            *(self._key(kind, conv_id) for kind in ("turns:", "text:", "frames:", "fseq:")),
            self._key("title:", conv_id),
            self._key("feedback:", conv_id),  # last: the script reads it as KEYS[#KEYS]
        ]
        args = (
            conv_id,
            self._key("convs:owner:"),
            self._key("atts:", conv_id),
            self._key("att:", f"{conv_id}:"),
        )
        return bool(await self.redis.eval(_DELETE_CONVERSATION, len(keys), *keys, *args))

    def _attachment_key(self, conv_id: str, attachment_id: str) -> str:
        # Attachment ids never hold ":", so the last segment is always the id.
        return self._key("att:", f"{conv_id}:{attachment_id}")

    async def save_attachment(self, record: AttachmentRecord, data: bytes) -> None:
        """Written (record, bytes and index entry in one MULTI) before it returns."""
        await self.flush()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            self._attachment_key(record.conv_id, record.id),
            mapping={"record": record.model_dump_json(), "data": bytes(data)},
        )
        pipe.zadd(self._key("atts:", record.conv_id), {record.id: record.created_at})
        await pipe.execute()

    async def load_attachment(
        self, conv_id: str, attachment_id: str
    ) -> tuple[AttachmentRecord, bytes] | None:
        await self.flush()
        values: list[Any] = await self.redis.hmget(
            self._attachment_key(conv_id, attachment_id), ["record", "data"]
        )
        record, data = values
        if record is None or data is None:
            return None
        return AttachmentRecord.model_validate_json(record), bytes(data)

    async def list_attachments(self, conv_id: str) -> list[AttachmentRecord]:
        await self.flush()
        ids: list[Any] = await self.redis.zrange(self._key("atts:", conv_id), 0, -1)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for attachment_id in ids:
            pipe.hget(self._attachment_key(conv_id, _text(attachment_id)), "record")
        records = await pipe.execute()
        return [AttachmentRecord.model_validate_json(r) for r in records if r is not None]

    async def search_conversations(
        self, query: str, *, owner: str | None = None, limit: int = 50
    ) -> list[ConversationRecord]:
        """A substring scan, not an index (see the module docstring)."""
        terms = search_terms(query)
        if not terms or limit <= 0:
            return []
        await self.flush()
        index = self._key("convs") if owner is None else self._key("convs:owner:", owner)
        found: list[ConversationRecord] = []
        seen: set[str] = set()  # a conversation updated mid-scan moves up: seen twice
        for start in range(0, SEARCH_SCAN_MAX, SEARCH_BATCH):
            batch = min(SEARCH_BATCH, SEARCH_SCAN_MAX - start)
            listed = await self.redis.zrevrange(index, start, start + batch - 1)
            ids = [conv_id for conv_id in map(_text, listed) if conv_id not in seen]
            seen.update(ids)
            pipe = self.redis.pipeline(transaction=False)
            for conv_id in ids:
                pipe.get(self._key("conv:", conv_id))
                pipe.get(self._key("title:", conv_id))
                pipe.hvals(self._key("text:", conv_id))
            replies = await pipe.execute()
            for i, conv_id in enumerate(ids):
                text, title, turn_texts = replies[3 * i : 3 * i + 3]
                if text is None:
                    continue
                record = _record(text, title)
                if text_matches(record.title, terms) or any(
                    text_matches(t, terms) for t in await self._turn_texts(conv_id, turn_texts)
                ):
                    found.append(record)
                    if len(found) >= limit:
                        return found
            if len(listed) < batch:  # the index has no more
                break
        return found

    async def _turn_texts(self, conv_id: str, stored: list[Any]) -> list[str]:
        """The turns' search texts; computed from the turns when none is stored (turns
        saved before search existed)."""
        if stored:
            return [_text(t) for t in stored]
        turns: list[Any] = await self.redis.hvals(self._key("turns:", conv_id))
        return [turn_search_text(Turn.model_validate_json(t)) for t in turns]

    async def load_feedback(self, conv_id: str) -> dict[str, Feedback]:
        await self.flush()
        rows = await self.redis.hgetall(self._key("feedback:", conv_id))
        return {_text(k): Feedback.model_validate_json(v) for k, v in rows.items()}

    async def count_feedback(self) -> dict[Rating, int]:
        await self.flush()
        up, down = await self.redis.hmget(self._key("feedback:counts"), ["up", "down"])
        return {"up": int(up or 0), "down": int(down or 0)}

    async def _max_seq(self, conv_id: str) -> int:
        top: list[Any] = await self.redis.zrevrange(self._key("fseq:", conv_id), 0, 0)
        return int(_text(top[0])) if top else 0

    async def last_seq(self, conv_id: str) -> int:
        await self.flush()
        record_text = await self.redis.get(self._key("conv:", conv_id))
        recorded = (
            ConversationRecord.model_validate_json(record_text).last_seq if record_text else 0
        )
        return max(recorded, await self._max_seq(conv_id))

    # -- counters --------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._ops)

    @property
    def writes_applied(self) -> int:
        return self._applied

    @property
    def write_errors(self) -> int:
        return self._errors


def _record(text: Any, title: Any) -> ConversationRecord:
    """A stored record, with its renamed title if it has one."""
    record = ConversationRecord.model_validate_json(text)
    return record if title is None else record.model_copy(update={"title": _text(title)})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
