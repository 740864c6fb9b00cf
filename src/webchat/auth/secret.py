"""The deployment's secret: what session cookies are signed with and secret fingerprints are
keyed by. Every process of a deployment must hold the same one, and it must outlive
restarts (or every browser is logged out and every signature changes).

In order: ``secret_key`` (``WEBCHAT_SECRET_KEY``) when given; with ``--db postgresql://…``, one
secret created once in the database (the store of record, which a Redis flush leaves alone);
with ``--transport redis``, one secret created once in Redis and read by every process; else a
file (``secret_file``, by default beside the SQLite database) created on first start with mode
0600. An in-memory
database gets a secret that lives as long as the process, like its data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

from redis import asyncio as aredis

from webchat.settings import ServerSettings
from webchat.storage.postgres import is_postgres_url, postgres_secret

__all__ = ["REDIS_SECRET_KEY", "deployment_secret", "secret_file_path"]

REDIS_SECRET_KEY = "webchat:secret"
_BYTES = 32


def secret_file_path(settings: ServerSettings) -> Path | None:
    if settings.secret_file is not None:
        return settings.secret_file
    if settings.db == ":memory:" or is_postgres_url(settings.db):
        return None
    return Path(settings.db + ".secret")


def _file_secret(path: Path) -> bytes:
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(_BYTES))
    text = path.read_text(encoding="ascii").strip()
    if len(text) < 32:
        raise ValueError(f"secret file {path} holds fewer than 32 characters")
    return text.encode("ascii")


async def _redis_secret(url: str) -> bytes:
    client = aredis.from_url(url)
    try:
        await client.set(REDIS_SECRET_KEY, secrets.token_hex(_BYTES), nx=True)
        value = await client.get(REDIS_SECRET_KEY)
    finally:
        await client.aclose()
    return value if isinstance(value, bytes) else str(value).encode()


async def deployment_secret(settings: ServerSettings, *, shared: bool) -> bytes:
    """``shared``: processes share their state in Redis (``--transport redis``)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    if is_postgres_url(settings.db):
        return await postgres_secret(settings.db)
    if shared:
        return await _redis_secret(settings.redis_url)
    path = secret_file_path(settings)
    if path is None:
        return secrets.token_hex(_BYTES).encode("ascii")
    return await asyncio.to_thread(_file_secret, path)
