"""What a conversation search looks at, and how a user's query becomes a safe one.

Both stores search the same text: a conversation's title and, for each turn, the text that
turn added (its prompt and the assistant's answer). A turn carries the whole transcript up to
it, so indexing all of its blocks would index every earlier message once more per turn.

A query is a handful of words typed into a search box, never query syntax. Its words are its
runs of letters and digits (what SQLite's tokenizer calls tokens: ``"foo-bar"`` is ``foo`` and
``bar``), and each must occur, all of them in the title or all in one turn's text. The SQLite
store hands them to FTS5 as quoted prefix terms (``"foo"* "bar"*``), so quotes, ``*``,
``NEAR(``, ``AND``/``OR``/``NOT``, ``:`` and parentheses are never syntax (a syntax error would
be a 500); the Redis store compares them as case-insensitive substrings, which also finds a
word's beginning.
"""

from __future__ import annotations

import re
from typing import Final

from webchat.turns.models import Block, BlockKind, Turn

__all__ = [
    "MAX_QUERY_TERMS",
    "fts_query",
    "own_blocks",
    "search_terms",
    "text_matches",
    "turn_search_text",
]

MAX_QUERY_TERMS: Final = 16
"""Words of a query that count; more only make the query slower, not better."""

_WORD: Final = re.compile(r"[^\W_]+")
"""Letters and digits: ``_`` and punctuation separate words, as for FTS5's unicode61."""


def own_blocks(turn: Turn) -> list[Block]:
    """The blocks ``turn`` added: from its (last) user block on; every block if it has none."""
    start = 0
    for index, block in enumerate(turn.blocks):
        if block.kind == BlockKind.USER:
            start = index
    return turn.blocks[start:]


def turn_search_text(turn: Turn) -> str:
    """The user's and the assistant's text of what ``turn`` added, one block per line."""
    kinds = (BlockKind.USER, BlockKind.LLM_TEXT)
    return "\n".join(b.text for b in own_blocks(turn) if b.kind in kinds and b.text)


def search_terms(query: str) -> list[str]:
    """The query's words (at most ``MAX_QUERY_TERMS``); none if it has no letter or digit."""
    return _WORD.findall(query)[:MAX_QUERY_TERMS]


def fts_query(query: str) -> str | None:
    """An FTS5 MATCH expression for ``query``: every word quoted (a ``"`` doubled, should one
    ever get through) as a prefix term, all of them required; None when there is no word."""
    terms = search_terms(query)
    if not terms:
        return None
    return " ".join('"' + term.replace('"', '""') + '"*' for term in terms)


def text_matches(text: str, terms: list[str]) -> bool:
    """Whether every term occurs in ``text``, ignoring case (the Redis store's search)."""
    folded = text.casefold()
    return all(term.casefold() in folded for term in terms)
