"""Branches: the turns of a session form a tree, kept as a list in creation order.

Each turn names the turn it continues in ``metadata.parent_turn_id`` (``None``: a root).
Regenerating an answer forks a sibling of the answer's turn; editing an earlier message forks
from that message's parent. The list itself stays append-only, in the order turns were made,
because storage saves turns by index and a process catching up compares lengths: a tree that
reordered its list would break both. Everything here is derived from that list, so nothing
about the tree needs storing besides each turn's parent.

Two facts follow from creation order and are relied on: a parent always comes before its
children, and the most recently created turn is a leaf, the tip of the current branch.
"""

from __future__ import annotations

from collections.abc import Sequence

from webchat.turns import Turn

ROOT = ""
"""Key of the roots in ``children``; as a requested parent: start a new root, no history."""


class UnknownTurnError(LookupError):
    """A turn id names no turn of the conversation."""

    def __init__(self, turn_id: str) -> None:
        super().__init__(f"no turn {turn_id!r} in this conversation")
        self.turn_id = turn_id


def link_legacy(turns: Sequence[Turn]) -> None:
    """Give each turn stored before branches existed its parent, in place.

    Those histories were linear (every run continued the latest turn), so the parent of such
    a turn is the one before it. Turns that carry the field, even as ``None``, are left alone.
    """
    previous: Turn | None = None
    for turn in turns:
        if not turn.metadata.has_parent_link:
            turn.metadata.parent_turn_id = previous.id if previous is not None else None
        previous = turn


def tip(turns: Sequence[Turn]) -> Turn | None:
    """The tip of the current branch: the most recently created turn (always a leaf)."""
    return turns[-1] if turns else None


def find(turns: Sequence[Turn], turn_id: str) -> Turn:
    """The turn with ``turn_id``; raises ``UnknownTurnError``."""
    for turn in reversed(turns):  # recent turns are the ones asked for most
        if turn.id == turn_id:
            return turn
    raise UnknownTurnError(turn_id)


def _parent_index(turns: Sequence[Turn]) -> dict[str, str]:
    """Each turn's parent id, for links that point back in the list.

    A link to a later turn, to itself or outside ``turns`` can only come from a damaged
    history; such a turn counts as a root, so the tree stays a forest (no cycles) in which
    every turn can be reached and shown.
    """
    parents: dict[str, str] = {}
    earlier: set[str] = set()
    for turn in turns:
        parent = turn.metadata.parent_turn_id
        if parent and parent in earlier:
            parents[turn.id] = parent
        earlier.add(turn.id)
    return parents


def children(turns: Sequence[Turn]) -> dict[str, list[str]]:
    """Each turn's child ids in creation order, roots under ``ROOT``; every turn is a key
    (a leaf with an empty list), so a client never has to guess."""
    parents = _parent_index(turns)
    tree: dict[str, list[str]] = {ROOT: []}
    for turn in turns:
        tree[turn.id] = []
        tree[parents.get(turn.id, ROOT)].append(turn.id)
    return tree


def path_to(turns: Sequence[Turn], turn_id: str) -> list[Turn]:
    """The branch ending at ``turn_id``: its turns from the root down; raises
    ``UnknownTurnError``."""
    by_id = {turn.id: turn for turn in turns}
    if turn_id not in by_id:
        raise UnknownTurnError(turn_id)
    parents = _parent_index(turns)
    path = [by_id[turn_id]]
    while (parent := parents.get(path[-1].id)) is not None:
        path.append(by_id[parent])
    path.reverse()
    return path
