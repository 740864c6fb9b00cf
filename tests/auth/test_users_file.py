"""The users file of ``--auth users``: passwords, API tokens, and the file itself (mode,
atomic writes, re-reads on change, two writers at once)."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from webchat.auth.users import TOKEN_PREFIX, UsersFile, UsersFileError

FAST = {"time_cost": 1, "memory_cost": 8192, "parallelism": 1}


def fast_hasher() -> PasswordHasher:
    return PasswordHasher(**FAST)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "users.yaml"


@pytest.fixture
def store(path: Path) -> UsersFile:
    users = UsersFile(path, hasher=fast_hasher())
    users.load()
    return users


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- adding users, checking passwords and tokens -------------------------------------------


def test_a_missing_file_is_no_users(store: UsersFile, path: Path) -> None:
    assert not path.exists()
    assert store.users() == []
    assert store.get("alice") is None
    assert store.verify_password("alice", "x") is None
    assert store.refresh() is False, "still missing: nothing to re-read"


def test_add_makes_a_user_whose_password_and_token_verify(store: UsersFile, path: Path) -> None:
    token = store.add("alice", "correct horse", admin=True)

    assert token.startswith(TOKEN_PREFIX)
    record = store.get("alice")
    assert record is not None
    assert record.role == "admin" and record.password_hash is not None
    assert len(record.tokens) == 1 and record.created_at > 0
    assert store.verify_password("alice", "correct horse") == record
    assert store.verify_token(token) == record

    again = UsersFile(path, hasher=fast_hasher())  # another process, reading the file
    again.load()
    assert again.verify_password("alice", "correct horse") == record
    assert again.verify_token(token) == record


def test_a_user_is_a_plain_user_unless_admin(store: UsersFile) -> None:
    store.add("bob", "pw")
    assert store.get("bob") is not None
    assert store.get("bob").role == "user"  # type: ignore[union-attr]


def test_wrong_password_and_unknown_user_are_refused(store: UsersFile) -> None:
    store.add("alice", "right")
    assert store.verify_password("alice", "wrong") is None
    assert store.verify_password("alice", "") is None
    assert store.verify_password("Alice", "right") is None, "names are exact"
    assert store.verify_password("nobody", "right") is None


def test_an_unknown_user_still_costs_one_password_verification(path: Path) -> None:
    """So the response time does not say whether the name exists."""

    class CountingHasher(PasswordHasher):
        calls = 0

        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            CountingHasher.calls += 1
            return super().verify(hash, password)

    store = UsersFile(path, hasher=CountingHasher(**FAST))
    store.add("tokens-only", None)
    for name in ("nobody", "tokens-only"):
        CountingHasher.calls = 0
        assert store.verify_password(name, "guess") is None
        assert CountingHasher.calls == 1, name


def test_a_token_only_user_has_no_password(store: UsersFile) -> None:
    token = store.add("robot", None)
    assert store.get("robot").password_hash is None  # type: ignore[union-attr]
    assert store.verify_password("robot", "") is None
    assert store.verify_token(token) is not None


def test_an_empty_password_is_refused(store: UsersFile) -> None:
    with pytest.raises(UsersFileError, match="empty"):
        store.add("alice", "")
    assert store.get("alice") is None


def test_issue_token_adds_one_and_the_others_keep_working(store: UsersFile) -> None:
    first = store.add("alice", "pw")
    second = store.issue_token("alice")
    assert second != first
    assert store.verify_token(first) == store.verify_token(second) == store.get("alice")
    assert len(store.get("alice").tokens) == 2  # type: ignore[union-attr]


def tampered(token: str) -> list[str]:
    body = token[len(TOKEN_PREFIX) :]
    token_id, secret = body[:8], body[9:]
    flip = "A" if secret[-1] != "A" else "B"
    other_id = ("A" if token_id[0] != "A" else "B") + token_id[1:]
    return [
        f"{TOKEN_PREFIX}{token_id}_{secret[:-1]}{flip}",  # another secret
        f"{TOKEN_PREFIX}{token_id}_{secret[:-1]}",  # a shorter one
        f"{TOKEN_PREFIX}{token_id}_",  # none
        f"{TOKEN_PREFIX}{other_id}_{secret}",  # the secret under another id
        f"xyz_{token_id}_{secret}",  # another prefix
        f"{token_id}_{secret}",  # no prefix
        body,
        secret,
        "",
        TOKEN_PREFIX,
        "wct_" + "_" * 60,
    ]


def test_a_tampered_token_is_refused(store: UsersFile) -> None:
    token = store.add("alice", "pw")
    store.add("bob", "pw")
    for bad in tampered(token):
        assert store.verify_token(bad) is None, bad
    assert store.verify_token(token) is not None


def test_the_file_holds_no_secret_and_is_private(store: UsersFile, path: Path) -> None:
    token = store.add("alice", "my password")
    text = path.read_text(encoding="utf-8")
    assert "my password" not in text
    assert token not in text and token.rsplit("_", 1)[-1] not in text
    assert "$argon2id$" in text
    assert mode(path) == 0o600
    assert mode(store.lock_path) == 0o600


def test_a_rewrite_makes_a_readable_file_private(store: UsersFile, path: Path) -> None:
    path.write_text("users: []\n", encoding="utf-8")
    path.chmod(0o644)
    store.add("alice", "pw")
    assert mode(path) == 0o600


# -- removing, and names -------------------------------------------------------------------


def test_remove_ends_the_password_and_every_token(store: UsersFile, path: Path) -> None:
    first = store.add("alice", "pw")
    second = store.issue_token("alice")
    bob = store.add("bob", "pw")
    store.remove("alice")
    assert store.get("alice") is None
    assert store.verify_password("alice", "pw") is None
    assert store.verify_token(first) is None and store.verify_token(second) is None
    assert store.verify_token(bob) is not None, "the others stay"
    assert [u.name for u in store.users()] == ["bob"]


def test_a_name_removed_and_added_again_is_another_user(store: UsersFile) -> None:
    old_token = store.add("alice", "pw")
    old = store.get("alice")
    store.remove("alice")
    store.add("alice", "pw")
    new = store.get("alice")
    assert old is not None and new is not None
    assert new.uid != old.uid, "old sessions must not carry over"
    assert store.verify_token(old_token) is None


def test_changing_an_unknown_user_or_adding_an_existing_one_is_an_error(
    store: UsersFile, path: Path
) -> None:
    store.add("alice", "pw")
    with pytest.raises(UsersFileError, match="already exists"):
        store.add("alice", "other")
    with pytest.raises(UsersFileError, match="already exists"):
        store.add("ALICE", "other")  # one letter's case apart is not another person
    with pytest.raises(UsersFileError, match="no user 'bob'") as unknown:
        store.remove("bob")
    assert str(path) in str(unknown.value)
    with pytest.raises(UsersFileError, match="no user 'bob'"):
        store.issue_token("bob")
    assert store.verify_password("alice", "pw") is not None


@pytest.mark.parametrize(
    "name", ["", "a" * 65, "two words", "a/b", "../x", "é", "alice\n", "a:b", "<b>"]
)
def test_bad_names_are_refused(store: UsersFile, name: str) -> None:
    with pytest.raises(UsersFileError, match="invalid user name"):
        store.add(name, "pw")
    assert store.users() == []


@pytest.mark.parametrize("name", ["a", "a" * 64, "alice.smith@example.org", "bob_2", "x-y"])
def test_good_names_are_accepted(store: UsersFile, name: str) -> None:
    store.add(name, None)
    assert store.get(name) is not None


# -- reading the file: errors, and refresh() -----------------------------------------------

BROKEN = [
    ("yaml", "users: [unclosed\n", "not valid YAML"),
    ("list", "- alice\n", "must be a mapping"),
    ("key", "members: []\n", "members"),
    ("role", "users:\n- {name: a, uid: u1, role: root, created_at: 1}\n", "role"),
    ("name", "users:\n- {name: 'a b', uid: u1, created_at: 1}\n", "name"),
    ("field", "users:\n- {name: a, uid: u1, created_at: 1, colour: blue}\n", "colour"),
    (
        "same-name",
        "users:\n- {name: a, uid: u1, created_at: 1}\n- {name: a, uid: u2, created_at: 1}\n",
        "'a' is twice",
    ),
    (
        "same-uid",
        "users:\n- {name: a, uid: u1, created_at: 1}\n- {name: b, uid: u1, created_at: 1}\n",
        "uid 'u1' is twice",
    ),
]


@pytest.mark.parametrize(("text", "fragment"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_an_invalid_file_is_an_error_naming_it(path: Path, text: str, fragment: str) -> None:
    path.write_text(text, encoding="utf-8")
    store = UsersFile(path, hasher=fast_hasher())
    with pytest.raises(UsersFileError, match=fragment) as error:
        store.load()
    assert str(path) in str(error.value)
    with pytest.raises(UsersFileError):
        store.add("someone", "pw")  # nor is it overwritten


@pytest.mark.parametrize("text", ["", "# nobody yet\n", "users:\n", "users: []\n"])
def test_an_empty_file_is_no_users(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    store = UsersFile(path)
    store.load()
    assert store.users() == []


def test_refresh_sees_another_process_add_and_remove(store: UsersFile, path: Path) -> None:
    cli = UsersFile(path, hasher=fast_hasher())  # what `webchat users ...` uses
    token = cli.add("alice", "pw")
    assert store.verify_token(token) is None, "not re-read yet"
    assert store.refresh() is True
    assert store.verify_token(token) is not None
    assert store.refresh() is False, "unchanged"

    cli.remove("alice")
    assert store.refresh() is True
    assert store.verify_token(token) is None and store.get("alice") is None


def test_refresh_sees_a_hand_edit_in_place(store: UsersFile, path: Path) -> None:
    store.add("alice", "pw")
    store.add("bob", "pw")
    reader = UsersFile(path)
    reader.load()
    inode = os.stat(path).st_ino
    text = path.read_text(encoding="utf-8")
    with open(path, "r+", encoding="utf-8") as f:  # an editor writing the file in place
        f.write(text.replace("role: user", "role: admin"))
        f.truncate()
    assert os.stat(path).st_ino == inode
    assert reader.refresh() is True
    assert reader.get("bob").role == "admin"  # type: ignore[union-attr]


def test_refresh_after_the_file_is_deleted_is_no_users(store: UsersFile, path: Path) -> None:
    token = store.add("alice", "pw")
    path.unlink()
    assert store.refresh() is True
    assert store.verify_token(token) is None


def test_refresh_of_a_broken_file_fails_closed_and_says_so_once(
    store: UsersFile, path: Path
) -> None:
    token = store.add("alice", "pw")
    good = path.read_text(encoding="utf-8")
    path.write_text(good + "  - oops: [\n", encoding="utf-8")
    with pytest.raises(UsersFileError, match="not valid YAML") as error:
        store.refresh()
    assert str(path) in str(error.value)
    assert store.verify_token(token) is None, "nobody is let in on a file we cannot check"
    assert store.refresh() is False, "one error per version of the file"

    path.write_text(good, encoding="utf-8")
    assert store.refresh() is True
    assert store.verify_token(token) is not None


# -- two writers at once -------------------------------------------------------------------

PER_PROCESS = 12


def add_many(path: str, prefix: str, barrier: Any, results: Any) -> None:
    """In a child process: add PER_PROCESS users as fast as possible."""
    store = UsersFile(Path(path), hasher=fast_hasher())
    barrier.wait(timeout=30)
    for i in range(PER_PROCESS):
        name = f"{prefix}{i}"
        results.put((name, store.add(name, "pw")))


def test_concurrent_adds_from_two_processes_all_land(path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    workers = [
        context.Process(target=add_many, args=(str(path), prefix, barrier, results))
        for prefix in ("left", "right")
    ]
    for worker in workers:
        worker.start()
    tokens = dict(results.get(timeout=60) for _ in range(2 * PER_PROCESS))
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0

    store = UsersFile(path)
    store.load()
    expected = {f"{p}{i}" for p in ("left", "right") for i in range(PER_PROCESS)}
    assert {u.name for u in store.users()} == expected
    for name, token in tokens.items():
        assert store.verify_token(token) == store.get(name)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")], "no leftovers"
