"""YAML snapshots of turns: human-readable, diffable, and loadable back into a ``Turn``."""

from __future__ import annotations

from typing import Any

import yaml

from webchat.turns.models import Turn


def turn_to_yaml(turn: Turn) -> str:
    data = turn.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def turn_from_yaml(text: str) -> Turn:
    data: Any = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("a turn snapshot must be a YAML mapping")
    return Turn.model_validate(data)
