"""Turns and blocks, and their YAML snapshot form."""

from webchat.turns.models import Block, BlockKind, Turn, TurnMetadata
from webchat.turns.snapshot import turn_from_yaml, turn_to_yaml

__all__ = ["Block", "BlockKind", "Turn", "TurnMetadata", "turn_from_yaml", "turn_to_yaml"]
