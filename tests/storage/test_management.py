"""Rename, delete, search and feedback: one contract, checked on SQLite and on a real Redis.

Delete is checked the way it is promised: nothing of the conversation is left anywhere (every
SQLite row, every Redis key) but its owner claim, and no other conversation is touched.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from tests.storage.helpers import OpenStore, make_frames, make_record, make_turns
from tests.storage.test_sqlite import V1_SCHEMA
from webchat.storage import NullStore, SQLiteStore, Store
from webchat.storage.redis_store import RedisStore, _text
from webchat.storage.search import fts_query, search_terms, turn_search_text
from webchat.turns.models import Block, Turn

NASTY_QUERIES = [
    '"',
    '""',
    "*",
    "NEAR(",
    "NEAR(a b",
    "a OR",
    "AND",
    "NOT x",
    "(",
    ")",
    "-x",
    "^x",
    "title:x",
    "x*y",
    '"unbalanced',
    "a' OR '1'='1",
    "\\",
    "%",
    "_",
    "\x00",
    "🙂",
    "x" * 500,
]


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()


def exchange(prompt: str, answer: str, history: Turn | None = None) -> Turn:
    """A turn as a session makes it: the history, the prompt, then the answer."""
    user = Block.user(prompt)
    turn = history.fork(user) if history is not None else Turn(blocks=[user])
    return turn.append(Block.llm_text(answer))


def save_exchanges(store: Store, conv_id: str, *pairs: tuple[str, str]) -> list[Turn]:
    turns: list[Turn] = []
    for index, (prompt, answer) in enumerate(pairs):
        turns.append(exchange(prompt, answer, turns[-1] if turns else None))
        store.save_turn(conv_id, index, turns[-1])
    return turns


async def found(store: Store, query: str, owner: str | None = None) -> list[str]:
    return [r.conv_id for r in await store.search_conversations(query, owner=owner)]


# -- the search text and query ----------------------------------------------------------------


def test_a_turn_is_searched_by_what_it_added() -> None:
    first = exchange("What is a kettle?", "A pot for boiling water.")
    second = exchange("And a teapot?", "A pot for brewing tea.", first)
    second.append(Block.reasoning("secret thoughts"), Block.tool_call("c1", "search", {"q": 1}))
    assert turn_search_text(first) == "What is a kettle?\nA pot for boiling water."
    assert turn_search_text(second) == "And a teapot?\nA pot for brewing tea."


def test_queries_are_words_quoted_as_prefix_terms() -> None:
    assert search_terms('"NEAR(foo-bar* OR x_y') == ["NEAR", "foo", "bar", "OR", "x", "y"]
    assert fts_query("Héllo wörld") == '"Héllo"* "wörld"*'
    for query in ['"', "*", "()", "  ", "-_-"]:
        assert fts_query(query) is None
    assert len(search_terms("w " * 100)) == 16


# -- rename -----------------------------------------------------------------------------------


async def test_a_rename_sticks_through_later_saves_and_restarts(open_store: OpenStore) -> None:
    store = await open_store()
    store.save_conversation(make_record("c1", title="what is 2+3?", owner="alice"))
    store.rename_conversation("c1", "Arithmetic")
    record = await store.get_conversation("c1")
    assert record is not None and record.title == "Arithmetic"
    # A process that loaded the record before the rename saves it with the old title.
    store.save_conversation(make_record("c1", title="what is 2+3?", owner="alice", updated_at=200))
    listed = await store.list_conversations(owner="alice")
    assert [(r.conv_id, r.title, r.updated_at) for r in listed] == [("c1", "Arithmetic", 200)]
    assert await found(store, "arithmetic") == ["c1"]
    assert await found(store, "what") == []  # the old title is no longer searched

    again = await open_store()
    record = await again.get_conversation("c1")
    assert record is not None and record.title == "Arithmetic"


# -- delete -----------------------------------------------------------------------------------


async def fill(store: Store, conv_id: str, owner: str) -> None:
    assert await store.claim_owner(conv_id, owner) == owner
    store.save_conversation(make_record(conv_id, owner=owner, title=f"kettle {conv_id}"))
    store.append_frames(conv_id, make_frames(conv_id, range(1, 6)))
    turns = make_turns()
    for index, turn in enumerate(turns):
        store.save_turn(conv_id, index, turn)
    store.save_turn(conv_id, len(turns), exchange("kettle question", "kettle answer", turns[-1]))
    store.rename_conversation(conv_id, f"renamed kettle {conv_id}")
    store.save_feedback(conv_id, "turn-1", "up", "nice")
    store.save_feedback(conv_id, "turn-2", "down", None)
    await store.flush()


async def test_delete_leaves_nothing_but_the_owner_claim(store: Store) -> None:
    await fill(store, "doomed", "alice")
    await fill(store, "kept", "alice")
    assert await store.count_feedback() == {"up": 2, "down": 2}

    assert await store.delete_conversation("doomed") is True

    assert await store.get_conversation("doomed") is None
    assert await store.load_turns("doomed") == []
    assert await store.frames_since("doomed", 0) == []
    assert await store.last_seq("doomed") == 0
    assert await store.load_feedback("doomed") == {}
    assert await store.count_feedback() == {"up": 1, "down": 1}
    assert [r.conv_id for r in await store.list_conversations()] == ["kept"]
    assert [r.conv_id for r in await store.list_conversations(owner="alice")] == ["kept"]
    assert await store.count_conversations("alice") == 1
    assert await found(store, "kettle") == ["kept"]
    assert await store.owner_of("doomed") == "alice"  # the id stays alice's
    assert await store.claim_owner("doomed", "bob") == "alice"

    # The other conversation is whole.
    kept = await store.get_conversation("kept")
    assert kept is not None and kept.title == "renamed kettle kept"
    assert len(await store.load_turns("kept")) == 4
    assert len(await store.frames_since("kept", 0)) == 5
    assert set(await store.load_feedback("kept")) == {"turn-1", "turn-2"}

    assert await store.delete_conversation("doomed") is False  # idempotent
    assert await store.delete_conversation("never-was") is False


async def test_delete_removes_every_redis_key(redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    store = RedisStore(redis_url, prefix=prefix)
    await store.open()
    try:
        await fill(store, "doomed", "alice")
        await fill(store, "kept", "bob")
        before = {_text(k) for k in await store.redis.keys(prefix + "*")}
        assert await store.delete_conversation("doomed")
        after = {_text(k) for k in await store.redis.keys(prefix + "*")}
        gone = before - after
        assert gone == {
            *(
                f"{prefix}{kind}doomed"
                for kind in ("conv:", "turns:", "text:", "frames:", "fseq:", "title:", "feedback:")
            ),
            f"{prefix}convs:owner:alice",  # it was alice's only one: Redis drops an empty set
        }
        assert f"{prefix}owner:doomed" in after
        assert not any("doomed" in key for key in after - {f"{prefix}owner:doomed"})
        # Nor is it in any index.
        for index in (f"{prefix}convs", f"{prefix}convs:owner:alice", f"{prefix}convs:owner:bob"):
            assert await store.redis.zscore(index, "doomed") is None
        assert await store.redis.zscore(f"{prefix}convs", "kept") is not None
    finally:
        await store.close()


async def test_delete_removes_every_sqlite_row(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await fill(store, "doomed", "alice")
        await fill(store, "kept", "alice")
        assert await store.delete_conversation("doomed")
    finally:
        await store.close()
    with sqlite3.connect(db_path) as conn:
        for table in ("conversations", "turns", "frames", "search_text", "feedback"):
            count = f"SELECT count(*) FROM {table} WHERE conv_id = ?"
            assert conn.execute(count, ("doomed",)).fetchone() == (0,), table
            assert conn.execute(count, ("kept",)).fetchone() != (0,), table
        # The full-text index forgot it too (it indexes search_text's rows, by id).
        (indexed,) = conn.execute("SELECT count(*) FROM search_fts").fetchone()
        (rows,) = conn.execute("SELECT count(*) FROM search_text").fetchone()
        assert indexed == rows
        conn.execute("INSERT INTO search_fts (search_fts) VALUES ('integrity-check')")
        assert conn.execute("SELECT owner FROM owners WHERE conv_id = 'doomed'").fetchall() == [
            ("alice",)
        ]
    conn.close()


# -- search -----------------------------------------------------------------------------------


async def test_search_finds_titles_and_message_text_newest_first(store: Store) -> None:
    store.save_conversation(make_record("old", owner="alice", title="Kettles", updated_at=1))
    store.save_conversation(make_record("mid", owner="alice", title="Tea", updated_at=2))
    store.save_conversation(make_record("new", owner="bob", title="Coffee", updated_at=3))
    save_exchanges(store, "mid", ("Which kettle boils fastest?", "The electric one."))
    save_exchanges(store, "new", ("hi", "Use a kettle."), ("and milk?", "Warm it gently."))

    assert await found(store, "kettle") == ["new", "mid", "old"]  # prefix: "Kettles" too
    assert await found(store, "KETTLE", owner="alice") == ["mid", "old"]
    assert await found(store, "kettle", owner="carol") == []
    assert await found(store, "electric") == ["mid"]  # the assistant's text
    assert await found(store, "fastest kettle") == ["mid"]  # every word, any order
    assert await found(store, "fastest coffee") == []  # not in one turn or the title
    assert await found(store, "gently") == ["new"]  # a later turn's own text
    assert await found(store, "tea") == ["mid"]
    results = await store.search_conversations("kettle", limit=2)
    assert [r.conv_id for r in results] == ["new", "mid"]
    assert await store.search_conversations("kettle", limit=0) == []


async def test_search_follows_a_rewritten_turn(store: Store) -> None:
    store.save_conversation(make_record("c1", owner="alice", title="x"))
    store.save_turn("c1", 0, exchange("zebra", "stripes"))
    assert await found(store, "zebra") == ["c1"]
    store.save_turn("c1", 0, exchange("giraffe", "necks"))
    assert await found(store, "zebra") == []
    assert await found(store, "necks") == ["c1"]


async def test_search_diacritics_and_case_are_ignored(open_store: OpenStore) -> None:
    store = await open_store()
    store.save_conversation(make_record("c1", owner="alice", title="Crème Brûlée"))
    assert await found(store, "CRÈME") == ["c1"]
    if isinstance(store, SQLiteStore):
        assert await found(store, "creme brulee") == ["c1"]


@pytest.mark.parametrize("query", NASTY_QUERIES)
async def test_no_query_is_an_error(store: Store, query: str) -> None:
    store.save_conversation(make_record("c1", owner="alice", title='NEAR "quoted" x*y (a)'))
    results = await store.search_conversations(query, owner="alice")
    assert all(r.conv_id == "c1" for r in results)


async def test_punctuation_around_words_is_ignored(store: Store) -> None:
    store.save_conversation(make_record("c1", owner="alice", title='say "hello" NEAR(me)'))
    for query in ['"hello"', '"hello', "hello*", "NEAR(", "(me)", "near me hello"]:
        assert await found(store, query) == ["c1"], query
    for query in ['"', "*", "(", "NEAR( zzz"]:
        assert await found(store, query) == [], query


# -- feedback ---------------------------------------------------------------------------------


async def test_feedback_round_trip_counts_and_durability(open_store: OpenStore) -> None:
    store = await open_store()
    saved = store.save_feedback("c1", "t1", "up", "spot on")
    assert saved is not None and (saved.rating, saved.comment) == ("up", "spot on")
    store.save_feedback("c1", "t2", "down", None)
    store.save_feedback("c2", "t1", "up", None)
    loaded = await store.load_feedback("c1")
    assert {k: (v.rating, v.comment) for k, v in loaded.items()} == {
        "t1": ("up", "spot on"),
        "t2": ("down", None),
    }
    assert loaded["t1"].updated_at == saved.updated_at
    assert await store.count_feedback() == {"up": 2, "down": 1}

    store.save_feedback("c1", "t1", "down", "changed my mind")  # replaces
    assert await store.count_feedback() == {"up": 1, "down": 2}
    store.save_feedback("c1", "t2", None, "only a comment")  # no rating: not counted
    assert await store.count_feedback() == {"up": 1, "down": 1}
    assert store.save_feedback("c2", "t1", None, None) is None  # nothing left: removed
    assert await store.load_feedback("c2") == {}
    assert await store.count_feedback() == {"up": 0, "down": 1}

    again = await open_store()
    loaded = await again.load_feedback("c1")
    assert {k: (v.rating, v.comment) for k, v in loaded.items()} == {
        "t1": ("down", "changed my mind"),
        "t2": (None, "only a comment"),
    }
    assert await again.count_feedback() == {"up": 0, "down": 1}


async def test_the_null_store_keeps_no_feedback_nor_search() -> None:
    null = NullStore()
    assert null.save_feedback("c1", "t1", "up", None) is not None
    assert await null.load_feedback("c1") == {}
    assert await null.count_feedback() == {"up": 0, "down": 0}
    null.rename_conversation("c1", "x")
    assert await null.search_conversations("x") == []
    assert await null.delete_conversation("c1") is False


# -- migration --------------------------------------------------------------------------------


async def test_conversations_stored_before_search_are_found_after_the_upgrade(
    db_path: Path,
) -> None:
    db_path.parent.mkdir(parents=True)
    turn = exchange("Where do penguins live?", "Mostly in the southern hemisphere.")
    with sqlite3.connect(db_path) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute(
            "INSERT INTO conversations VALUES ('old', 'sess-1', 'default', NULL, 'sig', "
            "'Birds', 1.0, 2.0, 0)"
        )
        conn.execute("INSERT INTO turns VALUES ('old', 0, ?, ?)", (turn.id, turn.model_dump_json()))
        conn.execute("INSERT INTO turns VALUES ('old', 1, 'broken', '{not json')")
    conn.close()
    store = SQLiteStore(db_path)
    await store.open()
    try:
        assert await found(store, "birds") == ["old"]
        assert await found(store, "southern") == ["old"]
        assert await found(store, "penguins") == ["old"]
        assert await store.delete_conversation("old")
        assert await found(store, "penguins") == []
    finally:
        await store.close()


async def test_deleted_frames_are_gone_and_the_others_kept(open_store: OpenStore) -> None:
    """What a finished stream leaves: its end, not its deltas (``StoredDeltas``)."""
    store = await open_store()
    store.save_conversation(make_record("conv-1"))
    store.append_frames("conv-1", make_frames("conv-1", range(1, 11)))
    store.append_frames("conv-2", make_frames("conv-2", range(1, 4)))
    store.delete_frames("conv-1", [2, 3, 4, 9])
    store.delete_frames("conv-1", [])
    await store.flush()
    assert [seq for seq, _ in await store.frames_since("conv-1", 0)] == [1, 5, 6, 7, 8, 10]
    assert [seq for seq, _ in await store.frames_since("conv-2", 0)] == [1, 2, 3]
    assert await store.last_seq("conv-1") == 10
    # Another process opening the same data sees the same.
    other = await open_store()
    assert [seq for seq, _ in await other.frames_since("conv-1", 4)] == [5, 6, 7, 8, 10]
