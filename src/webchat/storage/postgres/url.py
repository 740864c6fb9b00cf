"""Which ``--db`` values name a PostgreSQL database, and how to show one without its password.

A ``--db`` is either a SQLite path (or ``:memory:``) or a ``postgresql://`` URL (libpq's form,
which asyncpg reads: user, password, host, port, database, ``?sslmode=`` and the like). The
URL may hold a password, so it is never logged or put in an error as given: ``redacted``
is the form that may be.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

__all__ = ["SCHEMES", "check_postgres_url", "is_postgres_url", "redacted"]

SCHEMES: Final = ("postgresql", "postgres")


def is_postgres_url(db: str) -> bool:
    """Whether ``db`` names a PostgreSQL database rather than a SQLite file."""
    scheme, sep, _ = db.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def redacted(db: str) -> str:
    """``db`` fit for a log line: a URL's password replaced by ``***``; a path as it is."""
    if not is_postgres_url(db):
        return db
    try:
        parts = urlsplit(db)
        password = parts.password
    except ValueError:
        return f"{db.partition('://')[0]}://***"
    if password is None:
        return db
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def check_postgres_url(db: str) -> None:
    """Refuse a URL asyncpg could not use, naming what is wrong (never echoing the URL, which
    may hold a password)."""
    try:
        parts = urlsplit(db)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"not a valid postgresql:// URL ({exc})") from None
    if parts.fragment:
        raise ValueError("a postgresql:// URL has no #fragment")
    if port == 0:
        raise ValueError("a postgresql:// URL's port must be 1-65535")
    if parts.path.strip("/") and "/" in parts.path.strip("/"):
        raise ValueError("a postgresql:// URL names one database: postgresql://HOST/DATABASE")
