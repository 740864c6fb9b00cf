"""Application code that extends webchat without forking it (see docs/extending.md).

It adds three things to the one ``EngineBuilder``:

- a **sink wrapper** with an extractor: every run's prompt, answer text, tool calls and ending
  are recorded in memory (``app.recorder.records``) and, if a path is given, appended to a
  JSON-lines file (``EXTENDING_APP_RECORDS`` for the module-level ``setup``);
- an **identity middleware** (``identity``, config ``{user: ...}``): on every model call it
  looks the user up again in an in-process directory and puts one system line saying who the
  model is talking to, so a change in the directory applies from the next model call on,
  without an engine rebuild;
- a **tool** (``remember``) that keeps notes for the application.

    # profiles.yaml
    profiles:
      - slug: default
        default_prompt: You are a helpful assistant.
        tools: [remember, calculator]
        middlewares: [{name: identity, config: {user: alice}}]
        step_settings: {api_type: offline}

    webchat serve --profiles profiles.yaml --app examples.extending_app:setup
    # then type: use remember {"note": "buy milk"}
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from webchat.conversation import EngineBuilder
from webchat.engines import Handler, RunContext
from webchat.events import (
    Event,
    EventSink,
    ExtractorSink,
    FinalEvent,
    RunCancelledEvent,
    RunFailedEvent,
    RunFinishedEvent,
    ToolCallExecuteEvent,
    ToolCallExecutionResultEvent,
    UserMessageEvent,
)
from webchat.middleware import Middleware
from webchat.tools import Tool
from webchat.turns import Block, BlockKind, Turn

log = logging.getLogger("examples.extending_app")

IDENTITY_MARK = "examples.extending_app.identity"
"""Block metadata marking the system block this middleware owns."""
PLACEHOLDER_MARK = "examples.extending_app.placeholder"


# -- extractor: one record per finished run ---------------------------------------------------


@dataclass
class RunRecord:
    conv_id: str
    inference_id: str
    prompt: str = ""
    answer: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "conv_id": self.conv_id,
            "inference_id": self.inference_id,
            "prompt": self.prompt,
            "answer": self.answer,
            "tool_calls": self.tool_calls,
            "status": self.status,
            "error": self.error,
        }


class RunRecorder:
    """Builds a ``RunRecord`` from each run's events and keeps it once the run has ended.

    Runs are told apart by ``meta.inference_id``; a run's events arrive in order through the
    conversation's sink, from its ``chat.user_message`` to exactly one ending event.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._open: dict[str, RunRecord] = {}

    def wrap(self, conv_id: str, sink: EventSink) -> EventSink:
        """The sink wrapper: ``builder.add_sink_wrapper(recorder.wrap)``."""

        async def extract(event: Event) -> None:
            try:
                await self.see(conv_id, event)
            except Exception:  # an extractor must never break the run it watches
                log.exception("recording %s of %s failed", event.type, conv_id)

        return ExtractorSink(sink, extract)

    async def see(self, conv_id: str, event: Event) -> None:
        inference_id = event.meta.inference_id
        if inference_id is None:
            return
        record = self._open.get(inference_id)
        if record is None:
            record = self._open[inference_id] = RunRecord(conv_id, inference_id)
        if isinstance(event, UserMessageEvent):
            record.prompt = event.text
        elif isinstance(event, FinalEvent):  # one per model call; the tool loop may make several
            record.answer = f"{record.answer}\n{event.text}" if record.answer else event.text
        elif isinstance(event, ToolCallExecuteEvent):
            call = event.tool_call
            record.tool_calls.append({"id": call.id, "name": call.name, "input": call.input})
        elif isinstance(event, ToolCallExecutionResultEvent):
            for entry in record.tool_calls:
                if entry["id"] == event.tool_result.id:
                    entry["result"] = event.tool_result.result
                    entry["error"] = (event.meta.extra or {}).get("error")
        elif isinstance(event, RunFinishedEvent | RunFailedEvent | RunCancelledEvent):
            del self._open[inference_id]
            record.status = event.type.removeprefix("run.")
            if isinstance(event, RunFailedEvent):
                record.error = event.error_string
            await self._keep(record.to_dict())

    async def _keep(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path is not None:
            line = json.dumps(record, ensure_ascii=False) + "\n"
            await asyncio.to_thread(_append, self.path, line)


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(line)


# -- middleware: per-call identity --------------------------------------------------------------


class IdentityConfig(BaseModel):
    """The ``identity`` middleware's config, validated when a request's config is built."""

    model_config = ConfigDict(extra="forbid")

    user: str = "guest"


@dataclass
class Person:
    name: str
    role: str = "member"


class Directory:
    """Who is who. Stands in for the application's user service; ``set`` changes take effect
    at the next model call of every conversation."""

    def __init__(self, people: dict[str, Person] | None = None) -> None:
        self.people = dict(people or {})

    def set(self, user: str, person: Person) -> None:
        self.people[user] = person

    def describe(self, user: str) -> str:
        person = self.people.get(user)
        if person is None:
            return f"You are talking to an unknown user ({user})."
        return f"You are talking to {person.name} ({user}), role: {person.role}."


def identity_middleware(directory: Directory, config: IdentityConfig) -> Middleware:
    """Keep one system block, after the profile's, with the user's current identity.

    The line is computed again on every model call (refresh), and the block is updated in
    place, so the transcript never holds more than one identity line.
    """

    def wrap(inner: Handler) -> Handler:
        async def handle(turn: Turn, ctx: RunContext) -> Turn:
            _apply_identity(turn, directory.describe(config.user))
            result = await inner(turn, ctx)
            _drop_empty_placeholder(result)
            return result

        return handle

    return wrap


def _apply_identity(turn: Turn, line: str) -> None:
    ours = next((b for b in turn.blocks if b.metadata.get(IDENTITY_MARK)), None)
    if ours is not None:
        ours.payload["text"] = line
        return
    block = Block.system(line)
    block.metadata[IDENTITY_MARK] = True
    first = next((i for i, b in enumerate(turn.blocks) if b.kind == BlockKind.SYSTEM), None)
    if first is None:
        # The system prompt middleware (inner) writes the profile's prompt into the first
        # system block: give it an empty one, so it never merges into ours.
        placeholder = Block.system("")
        placeholder.metadata[PLACEHOLDER_MARK] = True
        turn.blocks[0:0] = [placeholder, block]
    else:
        turn.blocks.insert(first + 1, block)


def _drop_empty_placeholder(turn: Turn) -> None:
    """A profile without a prompt left the placeholder empty: keep it out of the history."""
    turn.blocks[:] = [
        b for b in turn.blocks if not (b.metadata.get(PLACEHOLDER_MARK) and not b.text)
    ]


# -- tool ---------------------------------------------------------------------------------------


class Notes:
    def __init__(self) -> None:
        self.items: list[str] = []

    def remember(self, note: str) -> str:
        """Remember a note for later; returns how many notes are kept."""
        self.items.append(note)
        return f"noted ({len(self.items)} notes)"


# -- the application ---------------------------------------------------------------------------


class ExtendingApp:
    """Everything the application adds, with its state in one place (tests make their own)."""

    def __init__(self, records: Path | None = None, directory: Directory | None = None) -> None:
        self.recorder = RunRecorder(records)
        self.directory = directory or Directory({"alice": Person("Alice", "admin")})
        self.notes = Notes()

    def setup(self, builder: EngineBuilder) -> None:
        builder.register_tool("remember", lambda: Tool(self.notes.remember, name="remember"))
        builder.register_middleware(
            "identity",
            lambda config: identity_middleware(
                self.directory, IdentityConfig.model_validate(config)
            ),
            config_model=IdentityConfig,
        )
        builder.add_sink_wrapper(self.recorder.wrap)


_records = os.environ.get("EXTENDING_APP_RECORDS")
app = ExtendingApp(Path(_records) if _records else None)
setup = app.setup
"""For ``webchat serve --app examples.extending_app:setup`` or ``create_app(..., setup=setup)``."""
