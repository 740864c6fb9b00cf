"""The statements of the PostgreSQL store, next to the schema they assume (``migrations``).

Words for search arrive as ``text[]`` and become a ``tsvector`` as they are
(``array_to_tsvector``); queries arrive as ``tsquery`` text (see ``words``), cast from
``text`` so asyncpg never needs a codec for either type.
"""

from __future__ import annotations

from typing import Final

from webchat.storage.rows import ATTACHMENT_COLUMNS, KEEP_RENAMED, from_excluded

# ``created_at`` is deliberately not updated: it records the first save. A renamed title (and
# its words) is kept: the process saving may have loaded the record before the rename.
UPSERT_CONVERSATION: Final = f"""
INSERT INTO conversations (conv_id, session_id, profile_slug, overrides, signature, title,
                           title_words, created_at, updated_at, last_seq, owner)
VALUES ($1, $2, $3, $4, $5, $6, array_to_tsvector($7::text[]), $8, $9, $10, $11)
ON CONFLICT (conv_id) DO UPDATE SET
    {from_excluded("session_id", "profile_slug", "overrides", "signature")},
    title = {KEEP_RENAMED.format("title")},
    title_words = {KEEP_RENAMED.format("title_words")},
    {from_excluded("updated_at", "last_seq", "owner")}
"""

# DO NOTHING swallows only the uniqueness conflict (a frame seen twice, e.g. by the
# coordinators of two processes), never a NOT NULL violation.
INSERT_FRAME: Final = """
INSERT INTO frames (conv_id, seq, type, json) VALUES ($1, $2, $3, $4)
ON CONFLICT (conv_id, seq) DO NOTHING
"""

DELETE_FRAMES: Final = "DELETE FROM frames WHERE conv_id = $1 AND seq = ANY($2::bigint[])"

UPSERT_TURN: Final = """
INSERT INTO turns (conv_id, idx, turn_id, body) VALUES ($1, $2, $3, $4)
ON CONFLICT (conv_id, idx) DO UPDATE SET turn_id = excluded.turn_id, body = excluded.body
"""

# Unchanged words are not rewritten: the GIN index would be updated for nothing.
UPSERT_TURN_WORDS: Final = """
INSERT INTO search_text (conv_id, idx, words) VALUES ($1, $2, array_to_tsvector($3::text[]))
ON CONFLICT (conv_id, idx) DO UPDATE SET words = excluded.words
WHERE search_text.words IS DISTINCT FROM excluded.words
"""

RENAME: Final = """
UPDATE conversations SET title = $1, title_words = array_to_tsvector($2::text[]), renamed = true
WHERE conv_id = $3
"""

UPSERT_FEEDBACK: Final = """
INSERT INTO feedback (conv_id, turn_id, rating, comment, updated_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (conv_id, turn_id) DO UPDATE SET
    rating = excluded.rating, comment = excluded.comment, updated_at = excluded.updated_at
"""

DELETE_FEEDBACK: Final = "DELETE FROM feedback WHERE conv_id = $1 AND turn_id = $2"

WRITES: Final = {
    "conversation": UPSERT_CONVERSATION,
    "frame": INSERT_FRAME,
    "frames_delete": DELETE_FRAMES,
    "turn": UPSERT_TURN,
    "turn_words": UPSERT_TURN_WORDS,
    "rename": RENAME,
    "feedback": UPSERT_FEEDBACK,
    "feedback_clear": DELETE_FEEDBACK,
}
"""Every queued write, by kind."""

# A record saved before its frames were written says less than the timeline does, so the
# last seq read back is whichever is larger.
SELECT_CONVERSATION: Final = """
SELECT c.conv_id, c.session_id, c.profile_slug, c.overrides, c.signature, c.title,
       c.created_at, c.updated_at,
       greatest(c.last_seq,
                coalesce((SELECT max(f.seq) FROM frames f WHERE f.conv_id = c.conv_id), 0)),
       c.owner
FROM conversations c
"""

NEWEST_FIRST: Final = " ORDER BY c.updated_at DESC, c.conv_id DESC"

# Both halves are answered by a GIN index.
SEARCH: Final = """
WHERE c.conv_id IN (
    SELECT s.conv_id FROM search_text s WHERE s.words @@ $1::text::tsquery
    UNION
    SELECT t.conv_id FROM conversations t WHERE t.title_words @@ $1::text::tsquery
)
"""

# A record's non-empty owner counts as an owner: a claim never contradicts it.
CLAIM_OWNER: Final = """
INSERT INTO owners (conv_id, owner, claimed_at)
VALUES ($1, coalesce((SELECT nullif(owner, '') FROM conversations WHERE conv_id = $1), $2), $3)
ON CONFLICT (conv_id) DO NOTHING
"""

SELECT_CLAIM: Final = "SELECT owner FROM owners WHERE conv_id = $1"

SELECT_OWNER: Final = """
SELECT coalesce((SELECT owner FROM owners WHERE conv_id = $1),
                (SELECT nullif(owner, '') FROM conversations WHERE conv_id = $1))
"""

SELECT_LAST_SEQ: Final = """
SELECT greatest(coalesce((SELECT last_seq FROM conversations WHERE conv_id = $1), 0),
                coalesce((SELECT max(seq) FROM frames WHERE conv_id = $1), 0))
"""

INSERT_ATTACHMENT: Final = (
    f"INSERT INTO attachments ({ATTACHMENT_COLUMNS}, data) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)

# Of concurrent first starts exactly one secret is kept; every process reads that one.
CLAIM_SECRET: Final = """
INSERT INTO deployment (key, value) VALUES ('secret', $1) ON CONFLICT (key) DO NOTHING
"""
SELECT_SECRET: Final = "SELECT value FROM deployment WHERE key = 'secret'"
