"""The store of record of a deployment: PostgreSQL, through asyncpg, shared by every process.

Same contract as the SQLite store (``webchat.storage.base``): writes are plain calls that only
queue; a writer task the store owns applies them a batch at a time, each batch one
transaction (consecutive writes of one kind go in one pipelined ``executemany``). Reads wait
for the caller's earlier writes, then run on the pool (so while the server is away, a read
after a write waits for it to come back; ``/readyz`` says so). Owner claims, attachments
and deletes skip the queue (after the caller's queued writes) and are committed before
they answer.

Two kinds of failure, two answers. A write PostgreSQL refuses (bad data) must not take the
good ones of its batch down: the batch is rolled back and replayed one write per transaction,
and only the writes that fail on their own are dropped (logged, counted in ``write_errors``).
A lost connection or a server restarting is not the writes' fault: the batch stays queued and
is retried with backoff (every write is an idempotent upsert or insert-if-absent, so a batch
whose commit was acknowledged too late to be seen is harmless to apply twice). So a frame
handed to the store is written once PostgreSQL is back; ``close`` waits ``close_timeout`` for
that before it gives up and counts what is left as errors.

Several processes write the same frames (each coordinator stores what it sees): frames are
keyed by (conversation, seq) and inserted only if absent.

The URL may hold a password: logs and errors show ``redacted(url)`` only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import asyncpg

from webchat.storage.base import (
    AttachmentRecord,
    ConversationRecord,
    Feedback,
    Rating,
    check_owner,
    make_feedback,
)
from webchat.storage.postgres import sql
from webchat.storage.postgres.migrations import Connection, migrate
from webchat.storage.postgres.url import redacted
from webchat.storage.postgres.words import index_words, ts_query
from webchat.storage.rows import (
    ATTACHMENT_COLUMNS,
    CONVERSATION_TABLES,
    Write,
    attachment,
    attachment_params,
    record,
    runs_of_a_kind,
    write_kind,
)
from webchat.storage.search import turn_search_text
from webchat.storage.writer import WriteQueue, replay_on_failure
from webchat.turns.models import Turn

if TYPE_CHECKING:
    from webchat.conversation.frames import Frame

logger = logging.getLogger("webchat.storage")

TRANSIENT: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # includes "connection does not exist"
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.InterfaceError,  # "connection is closed"
)
"""Errors of the connection or the server, not of a write: retried, never dropped."""


def _text(value: str) -> str:
    """Free text as PostgreSQL can hold it: ``text`` cannot contain NUL (SQLite can), and a
    title or comment holding one must still be saved, not fail in the writer."""
    return value.replace("\x00", "\ufffd")


class PostgresStore:
    """Conversations, turns, frames, owners, search, feedback and attachments in PostgreSQL."""

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 500,
        pool_size: int = 10,
        close_timeout: float = 10.0,
    ) -> None:
        if batch_size < 1 or pool_size < 2:
            raise ValueError("batch_size must be >= 1 and pool_size >= 2")
        self._url = url
        self.name = redacted(url)
        self._pool_size = pool_size
        self._close_timeout = close_timeout
        self._pool: asyncpg.Pool | None = None
        self._writes: WriteQueue[Write] = WriteQueue(
            self._apply,
            name=self.name,
            task_name="postgres-writer",
            kind_of=write_kind,
            batch_size=batch_size,
            retry=TRANSIENT,
            close_timeout=close_timeout,
        )

    @property
    def queued(self) -> int:
        return self._writes.queued

    @property
    def writes_applied(self) -> int:
        return self._writes.writes_applied

    @property
    def write_errors(self) -> int:
        return self._writes.write_errors

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, apply the migrations the database lacks, and start writing."""
        self._writes.check_not_closed()
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._url, min_size=1, max_size=self._pool_size, command_timeout=60
            )
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            # The driver's message names host and user, never the password; the URL is not
            # repeated here because it may hold one.
            raise RuntimeError(
                f"cannot connect to PostgreSQL at {self.name}: {type(exc).__name__}: {exc}"
            ) from None
        try:
            async with pool.acquire() as conn:
                applied = await migrate(conn)
        except BaseException:
            await pool.close()
            raise
        for version in applied:
            logger.info("%s: schema migrated to version %d", self.name, version)
        self._pool = pool
        self._writes.start()

    async def close(self) -> None:
        """Write everything queued (waiting up to ``close_timeout`` for an unreachable server),
        then close. Safe to call twice or concurrently."""
        await self._writes.close(self._release)

    async def _release(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=self._close_timeout)
            except TimeoutError:
                pool.terminate()

    # -- writes (never block) ------------------------------------------------------------

    def save_conversation(self, record: ConversationRecord) -> None:
        overrides = None if record.overrides is None else json.dumps(record.overrides)
        self._enqueue(
            "conversation",
            (
                record.conv_id,
                record.session_id,
                record.profile_slug,
                overrides,
                record.signature,
                _text(record.title),
                index_words(record.title),
                record.created_at,
                record.updated_at,
                record.last_seq,
                record.owner,
            ),
        )

    def append_frames(self, conv_id: str, frames: Sequence[Frame]) -> None:
        for frame in frames:
            self._enqueue("frame", (conv_id, frame.seq, frame.type, frame.json))

    def delete_frames(self, conv_id: str, seqs: Sequence[int]) -> None:
        if seqs:
            self._enqueue("frames_delete", (conv_id, list(seqs)))

    def save_turn(self, conv_id: str, index: int, turn: Turn) -> None:
        # Serialised now: turns are mutable, and the caller means the turn as it is now.
        self._enqueue("turn", (conv_id, index, turn.id, turn.model_dump_json()))
        self._enqueue("turn_words", (conv_id, index, index_words(turn_search_text(turn))))

    def rename_conversation(self, conv_id: str, title: str) -> None:
        self._enqueue("rename", (_text(title), index_words(title), conv_id))

    def save_feedback(
        self, conv_id: str, turn_id: str, rating: Rating | None, comment: str | None
    ) -> Feedback | None:
        feedback = make_feedback(rating, comment)
        if feedback is None:
            self._enqueue("feedback_clear", (conv_id, turn_id))
        else:
            stored = None if feedback.comment is None else _text(feedback.comment)
            params = (conv_id, turn_id, feedback.rating, stored, feedback.updated_at)
            self._enqueue("feedback", params)
        return feedback

    def _enqueue(self, kind: str, params: tuple[Any, ...]) -> None:
        self._writes.put((kind, params))

    async def flush(self) -> None:
        """Return once every write queued before this call has been applied (or failed)."""
        await self._writes.flush()

    # -- reads and immediate writes ------------------------------------------------------

    async def _ready(self) -> asyncpg.Pool:
        """The pool, once the caller's queued writes are applied (it expects to see them)."""
        await self.flush()
        if self._pool is None:
            raise RuntimeError("store is closed" if self._writes.closed else "store is not open")
        return self._pool

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        pool = await self._ready()
        return list(await pool.fetch(query, *args))

    async def get_conversation(self, conv_id: str) -> ConversationRecord | None:
        rows = await self._fetch(sql.SELECT_CONVERSATION + "WHERE c.conv_id = $1", conv_id)
        return record(tuple(rows[0])) if rows else None

    async def list_conversations(
        self, *, limit: int = 100, offset: int = 0, owner: str | None = None
    ) -> list[ConversationRecord]:
        """Newest activity first; only ``owner``'s records when given (by the owner index)."""
        if limit <= 0:
            return []
        if owner is None:
            query = sql.SELECT_CONVERSATION + sql.NEWEST_FIRST + " LIMIT $1 OFFSET $2"
            rows = await self._fetch(query, limit, max(offset, 0))
        else:
            query = (
                sql.SELECT_CONVERSATION
                + "WHERE c.owner = $3"
                + sql.NEWEST_FIRST
                + " LIMIT $1 OFFSET $2"
            )
            rows = await self._fetch(query, limit, max(offset, 0), owner)
        return [record(tuple(row)) for row in rows]

    async def count_conversations(self, owner: str) -> int:
        pool = await self._ready()
        count = await pool.fetchval("SELECT count(*) FROM conversations WHERE owner = $1", owner)
        return int(count)

    async def claim_owner(self, conv_id: str, owner: str) -> str:
        """Insert-if-absent, then read the winner, in one READ COMMITTED transaction: the
        insert waits for a concurrent claimant's commit, and the read (a new snapshot) sees
        whichever claim won. Committed before it returns."""
        check_owner(owner)
        pool = await self._ready()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(sql.CLAIM_OWNER, conv_id, owner, time.time())
            winner = await conn.fetchval(sql.SELECT_CLAIM, conv_id)
        return str(winner)

    async def owner_of(self, conv_id: str) -> str | None:
        pool = await self._ready()
        value = await pool.fetchval(sql.SELECT_OWNER, conv_id)
        return None if value is None else str(value)

    async def load_turns(self, conv_id: str) -> list[Turn]:
        query = "SELECT body FROM turns WHERE conv_id = $1 ORDER BY idx"
        return [Turn.model_validate_json(row[0]) for row in await self._fetch(query, conv_id)]

    async def frames_since(
        self, conv_id: str, seq: int, *, limit: int = 10_000
    ) -> list[tuple[int, str]]:
        """The stored wire text of frames after ``seq``, ready to resend as is."""
        query = "SELECT seq, json FROM frames WHERE conv_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        rows = await self._fetch(query, conv_id, seq, max(limit, 0))
        return [(int(row[0]), str(row[1])) for row in rows]

    async def last_seq(self, conv_id: str) -> int:
        pool = await self._ready()
        return int(await pool.fetchval(sql.SELECT_LAST_SEQ, conv_id))

    async def delete_conversation(self, conv_id: str) -> bool:
        """One transaction (after the caller's queued writes), committed before it returns."""
        pool = await self._ready()
        async with pool.acquire() as conn, conn.transaction():
            removed = {}
            for table in CONVERSATION_TABLES:
                # Table names come from the constant above, never from input.
                status = await conn.execute(f"DELETE FROM {table} WHERE conv_id = $1", conv_id)
                removed[table] = int(status.rpartition(" ")[2])
        return removed["conversations"] > 0

    async def search_conversations(
        self, query: str, *, owner: str | None = None, limit: int = 50
    ) -> list[ConversationRecord]:
        """Every word of ``query`` as a prefix, all in the title or all in one turn's text
        (see ``webchat.storage.postgres.words``), newest activity first."""
        match = ts_query(query)
        if match is None or limit <= 0:
            return []
        where, params = sql.SEARCH, [match]
        if owner is not None:
            where += "AND c.owner = $3 "
            params.append(owner)
        statement = sql.SELECT_CONVERSATION + where + sql.NEWEST_FIRST + " LIMIT $2"
        try:
            rows = await self._fetch(statement, params[0], limit, *params[1:])
        except asyncpg.PostgresSyntaxError as exc:
            # Folding leaves letters and digits only; a search must still never be a 500.
            logger.warning("search %r failed: %s", match, exc)
            return []
        return [record(tuple(row)) for row in rows]

    async def load_feedback(self, conv_id: str) -> dict[str, Feedback]:
        query = "SELECT turn_id, rating, comment, updated_at FROM feedback WHERE conv_id = $1"
        return {
            str(row[0]): Feedback(rating=row[1], comment=row[2], updated_at=row[3])
            for row in await self._fetch(query, conv_id)
        }

    async def count_feedback(self) -> dict[Rating, int]:
        query = "SELECT rating, count(*) FROM feedback WHERE rating IS NOT NULL GROUP BY rating"
        counts: dict[Rating, int] = {"up": 0, "down": 0}
        for rating, count in await self._fetch(query):
            if rating in counts:
                counts[rating] = int(count)
        return counts

    async def save_attachment(self, record: AttachmentRecord, data: bytes) -> None:
        """Committed before it returns (after the caller's queued writes)."""
        pool = await self._ready()
        await pool.execute(sql.INSERT_ATTACHMENT, *attachment_params(record), bytes(data))

    async def load_attachment(
        self, conv_id: str, attachment_id: str
    ) -> tuple[AttachmentRecord, bytes] | None:
        query = f"SELECT {ATTACHMENT_COLUMNS}, data FROM attachments WHERE conv_id = $1 AND id = $2"
        rows = await self._fetch(query, conv_id, attachment_id)
        if not rows:
            return None
        *fields, data = tuple(rows[0])
        return attachment(tuple(fields)), bytes(data)

    async def list_attachments(self, conv_id: str) -> list[AttachmentRecord]:
        query = (
            f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE conv_id = $1 "
            "ORDER BY created_at, id"
        )
        return [attachment(tuple(row)) for row in await self._fetch(query, conv_id)]

    # -- the writer's side --------------------------------------------------------------

    async def _apply(self, batch: list[Write]) -> tuple[int, int]:
        """Apply ``batch`` in one transaction, else write by write; returns (applied, failed).
        Connection errors propagate: the queue keeps the batch and retries."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("store is closed")
        async with pool.acquire() as conn:
            return await replay_on_failure(
                batch,
                lambda writes: _run_in_transaction(conn, writes),
                refused=(asyncpg.PostgresError,),
                retry=TRANSIENT,
                name=self.name,
                kind_of=write_kind,
            )


async def _run_in_transaction(conn: Connection, batch: list[Write]) -> None:
    async with conn.transaction():
        # Consecutive writes of one kind go in one (pipelined) executemany.
        for kind, params in runs_of_a_kind(batch):
            await conn.executemany(sql.WRITES[kind], params)
