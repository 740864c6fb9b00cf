"""The default store: one embedded SQLite file, written behind the streaming path.

Writes are queued in memory by plain function calls and applied by a writer task the store
owns, a batch at a time, each batch one transaction run in a worker thread. So a streaming
run pays for an append to a deque, never for a disk sync. The writer lets writes pile up for
up to ``batch_interval`` (a tick, 20 ms) before it takes a batch, so a stream of frames costs
one commit per tick rather than one per frame (taken at once, each token was its own
transaction and its own trip to a worker thread); a flush, which every read does first, ends
the wait, so reads still see the caller's writes. The price is that the queue is unbounded: a
stalled disk costs memory, not latency.

A bad write must not take good ones down with it, nor stop later writes: when a batch fails
it is rolled back and replayed one write per transaction, so only the writes that fail on
their own are dropped (logged and counted in ``write_errors``).

All database work happens in worker threads on one connection, serialised by a lock, so the
writer, concurrent reads and owner claims never use the connection at once. A claim is the
one write that skips the queue: it commits in its own transaction before it answers.

The schema is versioned (``PRAGMA user_version``) and upgraded in place, one step at a time,
when the store opens; a file from a newer version is refused rather than misread.

Search (schema 3) is SQLite's FTS5: ``search_text`` holds one row per conversation title
(``idx`` -1, kept by triggers on ``conversations``) and one per turn (its own text, written
with the turn), and ``search_fts`` indexes it as an external-content table kept in sync by
triggers, so the text is stored once. ``search_text`` has its own INTEGER PRIMARY KEY because
``VACUUM`` may renumber implicit rowids, which would silently detach an FTS index from them.

Attachments (schema 4) are rows of ``attachments`` with their bytes in a BLOB column, keyed by
(conversation, id): one file holds everything of a conversation, so a backup of the file is
a backup of its uploads too. Saving one skips the queue (like a claim): the uploader is given
its id and may use it at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from webchat.storage.base import (
    AttachmentRecord,
    ConversationRecord,
    Feedback,
    Rating,
    check_owner,
    make_feedback,
)
from webchat.storage.rows import (
    ATTACHMENT_COLUMNS,
    CONVERSATION_TABLES,
    KEEP_RENAMED,
    Write,
    attachment,
    attachment_params,
    from_excluded,
    record,
    runs_of_a_kind,
    write_kind,
)
from webchat.storage.search import fts_query, turn_search_text
from webchat.storage.writer import WriteQueue, replay_on_failure
from webchat.turns.models import Turn

if TYPE_CHECKING:
    from webchat.conversation.frames import Frame

logger = logging.getLogger("webchat.storage")

SCHEMA_VERSION: Final = 4

TITLE_IDX: Final = -1
"""The ``search_text.idx`` of a conversation's title (turns count from 0)."""

# The tokenizer folds case and diacritics ("Héllo" is found by "hello").
_STEP_3: Final = (
    "ALTER TABLE conversations ADD COLUMN renamed INTEGER NOT NULL DEFAULT 0",
    """CREATE TABLE search_text (
    id      INTEGER PRIMARY KEY,
    conv_id TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    text    TEXT NOT NULL,
    UNIQUE (conv_id, idx)
)""",
    """CREATE VIRTUAL TABLE search_fts USING fts5(
    text, content='search_text', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
)""",
    """CREATE TRIGGER search_text_insert AFTER INSERT ON search_text BEGIN
    INSERT INTO search_fts (rowid, text) VALUES (new.id, new.text);
END""",
    """CREATE TRIGGER search_text_delete AFTER DELETE ON search_text BEGIN
    INSERT INTO search_fts (search_fts, rowid, text) VALUES ('delete', old.id, old.text);
END""",
    """CREATE TRIGGER search_text_update AFTER UPDATE OF text ON search_text BEGIN
    INSERT INTO search_fts (search_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO search_fts (rowid, text) VALUES (new.id, new.text);
END""",
    f"""CREATE TRIGGER conversations_title_insert AFTER INSERT ON conversations BEGIN
    INSERT INTO search_text (conv_id, idx, text) VALUES (new.conv_id, {TITLE_IDX}, new.title)
    ON CONFLICT (conv_id, idx) DO UPDATE SET text = excluded.text;
END""",
    f"""CREATE TRIGGER conversations_title_update AFTER UPDATE OF title ON conversations
WHEN old.title IS NOT new.title BEGIN
    INSERT INTO search_text (conv_id, idx, text) VALUES (new.conv_id, {TITLE_IDX}, new.title)
    ON CONFLICT (conv_id, idx) DO UPDATE SET text = excluded.text;
END""",
    """CREATE TABLE feedback (
    conv_id    TEXT NOT NULL,
    turn_id    TEXT NOT NULL,
    rating     TEXT CHECK (rating IN ('up', 'down')),
    comment    TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (conv_id, turn_id)
)""",
    # What existed before search: every title, then (below, in Python) every turn's text.
    f"INSERT INTO search_text (conv_id, idx, text) SELECT conv_id, {TITLE_IDX}, title "
    "FROM conversations",
)


def _migrate_to_3(conn: sqlite3.Connection) -> None:
    """Search, renames and feedback (issue 11); indexes the turns already stored."""
    for statement in _STEP_3:
        conn.execute(statement)
    rows = conn.execute("SELECT conv_id, idx, body FROM turns").fetchall()
    conn.executemany(_UPSERT_TURN_TEXT, [(c, i, _stored_turn_text(b)) for c, i, b in rows])


def _stored_turn_text(body: str) -> str:
    try:
        return turn_search_text(Turn.model_validate_json(body))
    except ValueError:  # a turn this code cannot read is still kept, just not searchable
        logger.warning("a stored turn could not be read for the search index")
        return ""


# Each entry takes the database from the version before it to its own; a new database runs
# them all, so a fresh file and a migrated one end with the same schema. Never edit a step
# that has shipped: add the next one and bump SCHEMA_VERSION. A step is SQL statements
# separated by ";" (no triggers), or a function for what SQL alone cannot do.
_MIGRATIONS: Final[dict[int, str | Callable[[sqlite3.Connection], None]]] = {
    1: """
CREATE TABLE IF NOT EXISTS conversations (
    conv_id      TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL,
    profile_slug TEXT NOT NULL,
    overrides    TEXT,
    signature    TEXT NOT NULL DEFAULT '',
    title        TEXT NOT NULL DEFAULT '',
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    last_seq     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS conversations_by_update
    ON conversations (updated_at DESC, conv_id DESC);
CREATE TABLE IF NOT EXISTS turns (
    conv_id TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    turn_id TEXT NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (conv_id, idx)
);
CREATE TABLE IF NOT EXISTS frames (
    conv_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    json    TEXT NOT NULL,
    PRIMARY KEY (conv_id, seq)
);
""",
    # Ownership (issue 10). Existing rows get owner '' ("made before ownership existed").
    # Claims live in their own table rather than in ``conversations`` because a claim comes
    # before the first record is saved, and must not be undone by a later record upsert.
    2: """
ALTER TABLE conversations ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE INDEX conversations_by_owner
    ON conversations (owner, updated_at DESC, conv_id DESC);
CREATE TABLE owners (
    conv_id    TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    claimed_at REAL NOT NULL
);
""",
    3: _migrate_to_3,
    # Attachments (issue 11): the bytes beside their record, in the same file.
    4: """
CREATE TABLE attachments (
    conv_id    TEXT NOT NULL,
    id         TEXT NOT NULL,
    owner      TEXT NOT NULL,
    name       TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    created_at REAL NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (conv_id, id)
);
""",
}
assert sorted(_MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))

# ``created_at`` is deliberately not updated: it records the first save. A renamed title is
# kept: the process saving may have loaded the record before the rename.
_UPSERT_CONVERSATION = f"""
INSERT INTO conversations (conv_id, session_id, profile_slug, overrides, signature, title,
                           created_at, updated_at, last_seq, owner)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (conv_id) DO UPDATE SET
    {from_excluded("session_id", "profile_slug", "overrides", "signature")},
    title = {KEEP_RENAMED.format("title")},
    {from_excluded("updated_at", "last_seq", "owner")}
"""

# DO NOTHING only swallows the uniqueness conflict (a frame seen twice, e.g. by two
# coordinators); INSERT OR IGNORE would also hide NOT NULL violations, i.e. real bugs.
_INSERT_FRAME = """
INSERT INTO frames (conv_id, seq, type, json) VALUES (?, ?, ?, ?)
ON CONFLICT (conv_id, seq) DO NOTHING
"""
_DELETE_FRAME = "DELETE FROM frames WHERE conv_id = ? AND seq = ?"

_UPSERT_TURN = """
INSERT INTO turns (conv_id, idx, turn_id, body) VALUES (?, ?, ?, ?)
ON CONFLICT (conv_id, idx) DO UPDATE SET turn_id = excluded.turn_id, body = excluded.body
"""

# Unchanged text is not rewritten: the FTS index would be updated for nothing.
_UPSERT_TURN_TEXT = """
INSERT INTO search_text (conv_id, idx, text) VALUES (?, ?, ?)
ON CONFLICT (conv_id, idx) DO UPDATE SET text = excluded.text
WHERE search_text.text IS NOT excluded.text
"""

_RENAME = "UPDATE conversations SET title = ?, renamed = 1 WHERE conv_id = ?"

_UPSERT_FEEDBACK = """
INSERT INTO feedback (conv_id, turn_id, rating, comment, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (conv_id, turn_id) DO UPDATE SET
    rating = excluded.rating, comment = excluded.comment, updated_at = excluded.updated_at
"""

_DELETE_FEEDBACK = "DELETE FROM feedback WHERE conv_id = ? AND turn_id = ?"

_INSERT_ATTACHMENT: Final = (
    f"INSERT INTO attachments ({ATTACHMENT_COLUMNS}, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_SEARCH = """
WHERE c.conv_id IN (
    SELECT s.conv_id FROM search_fts JOIN search_text s ON s.id = search_fts.rowid
    WHERE search_fts MATCH ?
)
"""

# A record saved before its frames were written says less than the timeline does, so the
# last seq read back is whichever is larger.
_SELECT_CONVERSATION = """
SELECT c.conv_id, c.session_id, c.profile_slug, c.overrides, c.signature, c.title,
       c.created_at, c.updated_at,
       max(c.last_seq, coalesce((SELECT max(f.seq) FROM frames f WHERE f.conv_id = c.conv_id), 0)),
       c.owner
FROM conversations c
"""

# A record's non-empty owner counts as an owner: a claim never contradicts it.
_CLAIM_OWNER = """
INSERT INTO owners (conv_id, owner, claimed_at)
VALUES (?, coalesce((SELECT nullif(owner, '') FROM conversations WHERE conv_id = ?), ?), ?)
ON CONFLICT (conv_id) DO NOTHING
"""

_SELECT_OWNER = """
SELECT coalesce((SELECT owner FROM owners WHERE conv_id = ?),
                (SELECT nullif(owner, '') FROM conversations WHERE conv_id = ?))
"""

_SELECT_LAST_SEQ = """
SELECT max(coalesce((SELECT last_seq FROM conversations WHERE conv_id = ?), 0),
           coalesce((SELECT max(seq) FROM frames WHERE conv_id = ?), 0))
"""

_T = TypeVar("_T")


class SchemaVersionError(RuntimeError):
    """The database was written by a newer version of this schema than this code knows."""


class SQLiteStore:
    """Conversations, turns and frames in one SQLite database (a file, or ``":memory:"``)."""

    def __init__(
        self, path: str | Path, *, batch_size: int = 500, batch_interval: float = 0.02
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if batch_interval < 0:
            raise ValueError("batch_interval must be >= 0")
        self._path = str(path)
        self._batch_size = batch_size
        self._batch_interval = batch_interval
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._writes: WriteQueue[Write] = WriteQueue(
            self._apply,
            name=self._path,
            task_name=f"sqlite-writer:{self._path}",
            kind_of=write_kind,
            batch_size=batch_size,
            batch_interval=batch_interval,
        )

    @property
    def queued(self) -> int:
        """Writes accepted but not yet taken by the writer."""
        return self._writes.queued

    @property
    def writes_applied(self) -> int:
        return self._writes.writes_applied

    @property
    def write_errors(self) -> int:
        return self._writes.write_errors

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Prepare the database and start writing; writes queued before this are kept."""
        self._writes.check_not_closed()
        if self._conn is not None:
            return
        self._conn = await asyncio.to_thread(self._connect)
        self._writes.start()

    async def close(self) -> None:
        """Write everything queued, then close. Safe to call twice or concurrently."""
        await self._writes.close(self._release)

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(self._close_connection, conn)

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
                record.title,
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
        for seq in seqs:
            self._enqueue("frame_delete", (conv_id, seq))

    def save_turn(self, conv_id: str, index: int, turn: Turn) -> None:
        # Serialised now, not when written: turns are mutable, and the caller means the turn
        # as it is at this call.
        self._enqueue("turn", (conv_id, index, turn.id, turn.model_dump_json()))
        self._enqueue("turn_text", (conv_id, index, turn_search_text(turn)))

    def rename_conversation(self, conv_id: str, title: str) -> None:
        self._enqueue("rename", (title, conv_id))

    def save_feedback(
        self, conv_id: str, turn_id: str, rating: Rating | None, comment: str | None
    ) -> Feedback | None:
        feedback = make_feedback(rating, comment)
        if feedback is None:
            self._enqueue("feedback_clear", (conv_id, turn_id))
        else:
            params = (conv_id, turn_id, feedback.rating, feedback.comment, feedback.updated_at)
            self._enqueue("feedback", params)
        return feedback

    def _enqueue(self, kind: str, params: tuple[Any, ...]) -> None:
        self._writes.put((kind, params))

    async def flush(self) -> None:
        """Return once every write queued before this call has been applied (or failed)."""
        await self._writes.flush()

    # -- reads ---------------------------------------------------------------------------

    async def get_conversation(self, conv_id: str) -> ConversationRecord | None:
        rows = await self._read(self._query, _SELECT_CONVERSATION + "WHERE c.conv_id = ?", conv_id)
        return record(rows[0]) if rows else None

    async def list_conversations(
        self, *, limit: int = 100, offset: int = 0, owner: str | None = None
    ) -> list[ConversationRecord]:
        """Newest activity first; only ``owner``'s records when given (by the owner index)."""
        where, params = ("", ()) if owner is None else ("WHERE c.owner = ? ", (owner,))
        sql = (
            _SELECT_CONVERSATION
            + where
            + "ORDER BY c.updated_at DESC, c.conv_id DESC LIMIT ? OFFSET ?"
        )
        rows = await self._read(self._query, sql, *params, limit, offset)
        return [record(row) for row in rows]

    async def count_conversations(self, owner: str) -> int:
        sql = "SELECT count(*) FROM conversations WHERE owner = ?"
        rows = await self._read(self._query, sql, owner)
        return int(rows[0][0])

    async def claim_owner(self, conv_id: str, owner: str) -> str:
        """Applied at once (after the caller's queued writes), in one transaction, on the
        store's one connection: so it is serialised with the writer and with other claims in
        this process, and ``BEGIN IMMEDIATE`` (waiting up to the busy timeout) serialises it
        with other processes. Committed before it returns."""
        check_owner(owner)
        return await self._read(self._claim, conv_id, owner, time.time())

    async def owner_of(self, conv_id: str) -> str | None:
        rows = await self._read(self._query, _SELECT_OWNER, conv_id, conv_id)
        value = rows[0][0]
        return None if value is None else str(value)

    async def load_turns(self, conv_id: str) -> list[Turn]:
        sql = "SELECT body FROM turns WHERE conv_id = ? ORDER BY idx"
        rows = await self._read(self._query, sql, conv_id)
        return [Turn.model_validate_json(body) for (body,) in rows]

    async def frames_since(
        self, conv_id: str, seq: int, *, limit: int = 10_000
    ) -> list[tuple[int, str]]:
        """The stored wire text of frames after ``seq``, ready to resend as is."""
        sql = "SELECT seq, json FROM frames WHERE conv_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        rows = await self._read(self._query, sql, conv_id, seq, limit)
        return [(int(s), str(text)) for s, text in rows]

    async def last_seq(self, conv_id: str) -> int:
        """The highest frame seq stored or recorded for the conversation; 0 if none."""
        rows = await self._read(self._query, _SELECT_LAST_SEQ, conv_id, conv_id)
        return int(rows[0][0])

    async def delete_conversation(self, conv_id: str) -> bool:
        """One transaction (after the caller's queued writes), committed before it returns;
        the search index follows through its triggers."""
        return await self._read(self._delete, conv_id)

    async def search_conversations(
        self, query: str, *, owner: str | None = None, limit: int = 50
    ) -> list[ConversationRecord]:
        """Full-text search (FTS5) over titles and turn text; see ``webchat.storage.search``."""
        match = fts_query(query)
        if match is None or limit <= 0:
            return []
        where, params = _SEARCH, [match]
        if owner is not None:
            where += "AND c.owner = ? "
            params.append(owner)
        sql = _SELECT_CONVERSATION + where + "ORDER BY c.updated_at DESC, c.conv_id DESC LIMIT ?"
        try:
            rows = await self._read(self._query, sql, *params, limit)
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith("fts5:"):
                raise
            # Quoting should make this impossible; a search must still never be a 500.
            logger.warning("search %r failed: %s", match, exc)
            return []
        return [record(row) for row in rows]

    async def load_feedback(self, conv_id: str) -> dict[str, Feedback]:
        sql = "SELECT turn_id, rating, comment, updated_at FROM feedback WHERE conv_id = ?"
        rows = await self._read(self._query, sql, conv_id)
        return {
            str(turn_id): Feedback(rating=rating, comment=comment, updated_at=updated_at)
            for turn_id, rating, comment, updated_at in rows
        }

    async def count_feedback(self) -> dict[Rating, int]:
        sql = "SELECT rating, count(*) FROM feedback WHERE rating IS NOT NULL GROUP BY rating"
        counts: dict[Rating, int] = {"up": 0, "down": 0}
        for rating, count in await self._read(self._query, sql):
            if rating in counts:
                counts[rating] = int(count)
        return counts

    async def save_attachment(self, record: AttachmentRecord, data: bytes) -> None:
        """Committed in its own transaction before it returns (after the queued writes)."""
        params = (*attachment_params(record), sqlite3.Binary(data))
        await self._read(self._execute_once, _INSERT_ATTACHMENT, params)

    async def load_attachment(
        self, conv_id: str, attachment_id: str
    ) -> tuple[AttachmentRecord, bytes] | None:
        sql = f"SELECT {ATTACHMENT_COLUMNS}, data FROM attachments WHERE conv_id = ? AND id = ?"
        rows = await self._read(self._query, sql, conv_id, attachment_id)
        if not rows:
            return None
        *fields, data = rows[0]
        return attachment(tuple(fields)), bytes(data)

    async def list_attachments(self, conv_id: str) -> list[AttachmentRecord]:
        sql = (
            f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE conv_id = ? "
            "ORDER BY created_at, id"
        )
        rows = await self._read(self._query, sql, conv_id)
        return [attachment(row) for row in rows]

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        # A caller that wrote and then reads expects to see its write.
        await self.flush()
        if self._conn is None:
            raise RuntimeError("store is closed" if self._writes.closed else "store is not open")
        return await asyncio.to_thread(fn, *args)

    # -- worker-thread side --------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        in_memory = self._path == ":memory:" or self._path.startswith("file::memory:")
        if not in_memory and self._path:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are begun and ended explicitly, one per batch.
        # ``timeout`` is SQLite's busy timeout: while another process holds the write lock,
        # a batch or an owner claim waits for it (up to 10s) instead of failing at once.
        conn = sqlite3.connect(
            self._path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        try:
            with self._lock:
                if not in_memory:
                    # WAL lets readers (other processes, backups) run while the writer commits;
                    # synchronous=NORMAL is durable across a process crash, which is what a
                    # chat timeline needs, at a fraction of FULL's fsync cost.
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self._path} has schema version {version}; this server knows up to "
                    f"{SCHEMA_VERSION}"
                )
            # All steps in one transaction: a failed upgrade leaves the file as it was.
            for step in range(version + 1, SCHEMA_VERSION + 1):
                migration = _MIGRATIONS[step]
                if callable(migration):
                    migration(conn)
                else:
                    for statement in migration.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                logger.info("%s: schema migrated to version %d", self._path, step)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _close_connection(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            conn.close()

    def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._require_conn()
            return conn.execute(sql, params).fetchall()

    def _claim(self, conv_id: str, owner: str, claimed_at: float) -> str:
        with self._lock:
            conn = self._require_conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_CLAIM_OWNER, (conv_id, conv_id, owner, claimed_at))
                (winner,) = conn.execute(
                    "SELECT owner FROM owners WHERE conv_id = ?", (conv_id,)
                ).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return str(winner)

    def _execute_once(self, sql: str, params: tuple[Any, ...]) -> None:
        """One statement in its own transaction, committed before returning."""
        with self._lock:
            conn = self._require_conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _delete(self, conv_id: str) -> bool:
        with self._lock:
            conn = self._require_conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                removed = {
                    table: conn.execute(
                        f"DELETE FROM {table} WHERE conv_id = ?", (conv_id,)
                    ).rowcount
                    for table in CONVERSATION_TABLES
                }
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return removed["conversations"] > 0

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is closed")
        return self._conn

    async def _apply(self, batch: list[Write]) -> tuple[int, int]:
        """Apply ``batch`` in one transaction (in a worker thread); returns (applied, failed)."""
        return await replay_on_failure(
            batch,
            lambda writes: asyncio.to_thread(self._run_in_transaction, writes),
            refused=(Exception,),
            name=self._path,
            kind_of=write_kind,
        )

    def _run_in_transaction(self, batch: list[Write]) -> None:
        with self._lock:
            conn = self._require_conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for kind, params in runs_of_a_kind(batch):
                    conn.executemany(_SQL[kind], params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise


_SQL: Final = {
    "conversation": _UPSERT_CONVERSATION,
    "frame": _INSERT_FRAME,
    "frame_delete": _DELETE_FRAME,
    "turn": _UPSERT_TURN,
    "turn_text": _UPSERT_TURN_TEXT,
    "rename": _RENAME,
    "feedback": _UPSERT_FEEDBACK,
    "feedback_clear": _DELETE_FEEDBACK,
}
