"""Write YAML snapshots of a turn at each phase of a run, for debugging a conversation.

Files land in ``<directory>/<session_id>/<inference_id>/NN-<phase>.yaml`` so a run reads
top to bottom in ``ls`` order. Writing happens in a worker thread to keep the loop free.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from webchat.engines.base import SnapshotPhase
from webchat.turns import Turn, turn_to_yaml


class DirectorySnapshotHook:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._counter = itertools.count(1)

    def path_for(self, turn: Turn, phase: SnapshotPhase, index: int) -> Path:
        session = turn.metadata.session_id or "no-session"
        inference = turn.metadata.inference_id or turn.id
        return self.directory / session / inference / f"{index:02d}-{phase}.yaml"

    async def __call__(self, turn: Turn, phase: SnapshotPhase) -> None:
        path = self.path_for(turn, phase, next(self._counter))
        text = turn_to_yaml(turn)
        await asyncio.to_thread(_write, path, text)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
