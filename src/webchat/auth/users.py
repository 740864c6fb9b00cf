"""The users file of ``--auth users``: who may sign in, with what password or API token.

One YAML file, written only by ``webchat users ...`` (hand edits work too). It holds no secret
in clear: passwords are argon2 hashes and API tokens are stored as the SHA-256 of their
secret part, so a leaked copy of the file signs nobody in.

The server reads it with :meth:`UsersFile.load` and then calls :meth:`UsersFile.refresh` on
each authentication; that costs one ``stat()`` while the file is unchanged and re-reads it
when it changed, so ``webchat users remove`` takes effect at once without a restart.

The CLI's mutations (:meth:`UsersFile.add`, :meth:`UsersFile.issue_token`,
:meth:`UsersFile.remove`) re-read the file under an exclusive ``flock`` on a sibling lock file
and replace it atomically, so two invocations never lose each other's writes and the server
never reads a half-written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from webchat.auth.principal import Role

__all__ = [
    "TOKEN_PREFIX",
    "TokenRecord",
    "UserRecord",
    "UsersFile",
    "UsersFileError",
    "valid_user_name",
]

NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"
NAME_RULE = "1-64 characters of letters, digits and _ . @ -"
TOKEN_PREFIX = "wct_"
"""Every API token starts so, which makes a leaked one easy to spot (secret scanners, logs)."""
TOKEN_ID_LENGTH = 8  # secrets.token_urlsafe(6): 48 random bits, only to find the record
TOKEN_SECRET_BYTES = 32
FILE_MODE = 0o600
HEADER = (
    "# webchat users (--auth users): change with `webchat users add|token|remove|list`.\n"
    "# Passwords are argon2 hashes; tokens are stored as the sha256 of their secret.\n"
)

TOKEN_ID_PATTERN = r"^[A-Za-z0-9_-]{8}$"  # TOKEN_ID_LENGTH url-safe characters

_NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # NAME_PATTERN, for re.fullmatch
_TOKEN_ID_RE = re.compile(r"[A-Za-z0-9_-]{8}")

_Stamp = tuple[int, int, int]
"""(mtime_ns, size, inode): what :meth:`UsersFile.refresh` compares. A CLI write replaces the
file, so the inode alone changes on every one of ours; mtime and size catch hand edits."""
_NEVER: _Stamp = (-1, -1, -1)


class UsersFileError(ValueError):
    """The users file cannot be read or used (the message names it), or a ``webchat users``
    command cannot be carried out (unknown user, existing user, bad name)."""


class TokenRecord(BaseModel):
    """One API token of a user: only a hash of its secret is kept."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=TOKEN_ID_PATTERN)
    """The token's public part: finds the record without comparing against every hash."""
    hash: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False)
    """Hex SHA-256 of the token's secret part."""
    created_at: float


class UserRecord(BaseModel):
    """One user of the file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    uid: str = Field(min_length=1, max_length=128)
    """Random, made when the user is added: a name removed and added again is another person,
    and sessions signed in as the old one must not carry over to the new one."""
    role: Role = "user"
    password_hash: str | None = Field(default=None, repr=False)
    """argon2 hash (kept out of reprs, hence logs); None for a token-only user (no browser
    log-in)."""
    tokens: list[TokenRecord] = Field(default_factory=list)
    created_at: float


class _UsersDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[UserRecord] = Field(default_factory=list)

    @field_validator("users", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


@dataclass(frozen=True, slots=True)
class _State:
    """One reading of the file. Replaced as a whole (one attribute assignment), so a reader
    on another thread never sees half of an update."""

    stamp: _Stamp | None  # None: the file does not exist
    users: dict[str, UserRecord] = field(default_factory=dict)
    tokens: dict[str, tuple[UserRecord, TokenRecord]] = field(default_factory=dict)


def valid_user_name(name: str) -> bool:
    """Whether ``name`` may be a user name: 1-64 ASCII letters, digits and ``_ . @ -``
    (no spaces or look-alike characters, so a name reads the same in logs and the UI)."""
    return _NAME_RE.fullmatch(name) is not None


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _split_token(token: str) -> tuple[str, str] | None:
    """``wct_<id>_<secret>`` -> (id, secret). The id is fixed-length because the url-safe
    alphabet has ``_`` in it too."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    rest = token[len(TOKEN_PREFIX) :]
    token_id, separator, secret = (
        rest[:TOKEN_ID_LENGTH],
        rest[TOKEN_ID_LENGTH : TOKEN_ID_LENGTH + 1],
        rest[TOKEN_ID_LENGTH + 1 :],
    )
    if separator != "_" or not secret or _TOKEN_ID_RE.fullmatch(token_id) is None:
        return None
    return token_id, secret


class UsersFile:
    """The users store over one YAML file.

    ``hasher`` exists so tests can use cheaper argon2 parameters; the default is argon2-cffi's
    recommended profile. Hashes made with other parameters still verify (argon2 hashes carry
    their own parameters).
    """

    def __init__(self, path: Path, *, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.hasher = hasher or PasswordHasher()
        self._state = _State(stamp=_NEVER)
        self._dummy_hash: str | None = None

    # -- reading -------------------------------------------------------------------------

    def load(self) -> None:
        """Read the file now. A missing file is no users (the first ``webchat users add``
        creates it); an unreadable or invalid one raises :class:`UsersFileError`."""
        self._state = self._read()

    def refresh(self) -> bool:
        """Re-read the file if it changed since it was last read; returns whether it did.

        Meant to be called on every authentication: while the file is unchanged it costs one
        ``os.stat``. If the new version cannot be read or is invalid, the users are dropped
        (nobody authenticates against a file we cannot check, e.g. a botched hand edit that
        meant to remove someone) and :class:`UsersFileError` is raised once for that version;
        later calls return False until the file changes again.
        """
        stamp = self._stat()
        if stamp == self._state.stamp:
            return False
        try:
            self._state = self._read()
        except UsersFileError:
            self._state = _State(stamp=stamp)
            raise
        return True

    def users(self) -> list[UserRecord]:
        """Every user, in file order."""
        return list(self._state.users.values())

    def get(self, name: str) -> UserRecord | None:
        return self._state.users.get(name)

    # -- checking credentials ------------------------------------------------------------

    def verify_password(self, name: str, password: str) -> UserRecord | None:
        """The user if ``password`` is theirs, else None.

        An unknown user, or one without a password, still costs one argon2 verification
        (against a dummy hash), so the response time does not tell which names exist. This
        is CPU-bound for tens of milliseconds: call it from a worker thread in async code.
        """
        record = self._state.users.get(name)
        if record is None or record.password_hash is None:
            with contextlib.suppress(VerificationError, InvalidHashError):
                self.hasher.verify(self._dummy(), password)
            return None
        try:
            self.hasher.verify(record.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        return record

    def verify_token(self, token: str) -> UserRecord | None:
        """The user an API token ``wct_<id>_<secret>`` belongs to, else None.

        Only ``sha256(secret)`` is stored. A slow password hash (argon2) exists to make
        guessing low-entropy passwords from a stolen hash expensive; a token's secret is 32
        random bytes, which no amount of hashing speed makes guessable, so a fast hash is the
        standard choice and keeps per-request authentication cheap (one dict look-up by the
        token's id and one SHA-256). The comparison is constant-time.
        """
        parts = _split_token(token)
        if parts is None:
            return None
        token_id, secret = parts
        digest = _hash_secret(secret)
        entry = self._state.tokens.get(token_id)
        if entry is None:
            return None
        record, token_record = entry
        return record if hmac.compare_digest(digest, token_record.hash) else None

    # -- changing the file (the CLI) -----------------------------------------------------

    def add(self, name: str, password: str | None, *, admin: bool = False) -> str:
        """Create user ``name`` and return its first API token (shown once: only its hash is
        kept). ``password`` None makes a token-only user. A name that differs from an
        existing one only by case is refused too, so nobody can pass for someone else."""
        if not valid_user_name(name):
            raise UsersFileError(f"invalid user name {name!r}: use {NAME_RULE}")
        if password is not None and not password:
            raise UsersFileError("the password must not be empty")
        password_hash = self.hasher.hash(password) if password is not None else None
        with self._locked() as state:
            clash = next((n for n in state.users if n.lower() == name.lower()), None)
            if clash is not None:
                raise UsersFileError(f"user {clash!r} already exists in {self.path}")
            token, token_record = self._new_token(state)
            record = UserRecord(
                name=name,
                uid=secrets.token_urlsafe(12),
                role="admin" if admin else "user",
                password_hash=password_hash,
                tokens=[token_record],
                created_at=time.time(),
            )
            self._commit([*state.users.values(), record])
        return token

    def issue_token(self, name: str) -> str:
        """Give user ``name`` one more API token and return it (shown once). Its other
        tokens keep working."""
        with self._locked() as state:
            record = self._known(state, name)
            token, token_record = self._new_token(state)
            updated = record.model_copy(update={"tokens": [*record.tokens, token_record]})
            self._commit([updated if u.name == name else u for u in state.users.values()])
        return token

    def remove(self, name: str) -> None:
        """Delete user ``name`` with its password and tokens."""
        with self._locked() as state:
            self._known(state, name)
            self._commit([u for u in state.users.values() if u.name != name])

    # -- internals -----------------------------------------------------------------------

    def _known(self, state: _State, name: str) -> UserRecord:
        record = state.users.get(name)
        if record is None:
            raise UsersFileError(f"no user {name!r} in {self.path}")
        return record

    @staticmethod
    def _new_token(state: _State) -> tuple[str, TokenRecord]:
        while True:
            token_id = secrets.token_urlsafe(TOKEN_ID_LENGTH * 3 // 4)
            if token_id not in state.tokens:
                break
        secret = secrets.token_urlsafe(TOKEN_SECRET_BYTES)
        record = TokenRecord(id=token_id, hash=_hash_secret(secret), created_at=time.time())
        return f"{TOKEN_PREFIX}{token_id}_{secret}", record

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def _stat(self) -> _Stamp | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsersFileError(f"cannot read users file {self.path}: {exc.strerror}") from exc
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> _State:
        try:
            with open(self.path, "rb") as f:
                # Stamped before reading: a write after this point changes the stamp, so the
                # next refresh() reads it.
                st = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError:
            return _State(stamp=None)
        except OSError as exc:
            raise UsersFileError(f"cannot read users file {self.path}: {exc.strerror}") from exc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        try:
            data = yaml.safe_load(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise UsersFileError(f"users file {self.path} is not UTF-8 text: {exc}") from exc
        except yaml.YAMLError as exc:
            raise UsersFileError(f"users file {self.path} is not valid YAML: {exc}") from exc
        if data is None:
            return _State(stamp=stamp)
        if not isinstance(data, dict):
            raise UsersFileError(f"users file {self.path} must be a mapping with a 'users' list")
        try:
            document = _UsersDocument.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise UsersFileError(f"users file {self.path}: {problems}") from None
        return self._index(stamp, document.users)

    def _index(self, stamp: _Stamp, records: list[UserRecord]) -> _State:
        users: dict[str, UserRecord] = {}
        uids: set[str] = set()
        tokens: dict[str, tuple[UserRecord, TokenRecord]] = {}
        for record in records:
            if record.name in users:
                raise UsersFileError(f"users file {self.path}: user {record.name!r} is twice")
            if record.uid in uids:
                # Two users with one uid would own each other's conversations.
                raise UsersFileError(f"users file {self.path}: uid {record.uid!r} is twice")
            users[record.name] = record
            uids.add(record.uid)
            for token in record.tokens:
                if token.id in tokens:
                    raise UsersFileError(f"users file {self.path}: token id {token.id!r} is twice")
                tokens[token.id] = (record, token)
        return _State(stamp=stamp, users=users, tokens=tokens)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_State]:
        """Hold the exclusive lock and yield the file as it is now. The lock is on a sibling
        file, not the users file itself, because that one is replaced by every write."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise UsersFileError(
                f"cannot lock users file {self.path} ({self.lock_path}): {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read()
        finally:
            os.close(fd)  # releases the lock

    def _commit(self, records: list[UserRecord]) -> None:
        """Write ``records`` as the whole file (atomically, mode 0600) and make them the
        in-memory state. Called with the lock held."""
        self._index((0, 0, 0), records)  # refuse to write what could not be read back
        document = {"users": [r.model_dump(mode="json") for r in records]}
        text = HEADER + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        self._write_atomically(text.encode("utf-8"))
        self._state = self._read()

    def _write_atomically(self, data: bytes) -> None:
        directory = self.path.parent
        try:
            previous = os.stat(self.path)
        except OSError:
            previous = None
        try:
            fd, temp_name = tempfile.mkstemp(
                dir=directory, prefix=f".{self.path.name}.", suffix=".tmp"
            )
        except OSError as exc:
            raise UsersFileError(f"cannot write users file {self.path}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)
                if previous is not None:
                    # Run as root on a file the server's account owns: keep it that account's,
                    # or the server could no longer read it. Not permitted otherwise: fine.
                    with contextlib.suppress(PermissionError):
                        os.fchown(f.fileno(), previous.st_uid, previous.st_gid)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp_name, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise UsersFileError(f"cannot write users file {self.path}: {exc.strerror}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
