"""Search on PostgreSQL with the same semantics as the SQLite store's FTS5.

PostgreSQL's own text parser would not do: it keeps ``user@example.com`` or ``foo-bar`` as
one token, folds no diacritics without the ``unaccent`` extension, and stems per language.
So the words are cut and folded here, in Python, exactly as ``webchat.storage.search`` cuts a
query (runs of letters and digits), folded like FTS5's ``unicode61 remove_diacritics 2``
(case and diacritics ignored), and stored as a ``tsvector`` of those words as they are
(``array_to_tsvector``: no parsing, no stemming). A query becomes every folded word as a
prefix term, all required (``'kettle':* & 'tea':*``), which a GIN index answers.

A ``tsvector`` holds at most 1 MiB and each lexeme at most 2 KiB: a longer "word" (no one
types it into a search box) is not indexed, and a text past the limit keeps its first
distinct words.
"""

from __future__ import annotations

import unicodedata
from typing import Final

# _WORD: one definition of a word for every store and for queries.
from webchat.storage.search import _WORD, search_terms

__all__ = ["MAX_WORD_BYTES", "fold", "index_words", "ts_query"]

MAX_WORD_BYTES: Final = 2000
"""Longer words are left out of the index (PostgreSQL's lexeme limit is 2047 bytes)."""
MAX_TEXT_BYTES: Final = 900_000
"""What one text's words may add up to (a ``tsvector`` holds at most 1 MiB)."""


def fold(word: str) -> str:
    """``word`` without case or diacritics: ``"Brûlée"`` is ``"brulee"``."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def index_words(text: str) -> list[str]:
    """The distinct folded words of ``text``, for ``array_to_tsvector``."""
    words: dict[str, None] = {}
    size = 0
    for term in _WORD.findall(text):
        word = fold(term)
        length = len(word.encode())
        if not word or length > MAX_WORD_BYTES or word in words:
            continue
        size += length + 8  # a lexeme's text plus its entry
        if size > MAX_TEXT_BYTES:
            break
        words[word] = None
    return list(words)


def ts_query(query: str) -> str | None:
    """A ``tsquery`` (its text form) requiring every word of ``query`` as a prefix; None when
    the query has no word, or one too long to have been indexed."""
    terms = [fold(term) for term in search_terms(query)]
    terms = [term for term in terms if term]
    if not terms or any(len(term.encode()) > MAX_WORD_BYTES for term in terms):
        return None
    # Folded words hold letters and digits only; quoting is belt and braces.
    return " & ".join("'" + term.replace("\\", "\\\\").replace("'", "''") + "':*" for term in terms)
