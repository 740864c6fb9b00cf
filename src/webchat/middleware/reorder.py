"""Put each tool result directly after the tool calls it answers.

Providers reject transcripts where a tool result is separated from its call (OpenAI wants the
``tool`` messages right after the assistant message holding the calls). Results can drift when
blocks are appended out of band, so the transcript is normalised before every model call.
"""

from __future__ import annotations

from webchat.engines.base import Handler, RunContext
from webchat.turns import Block, BlockKind, Turn


def reorder_tool_results(blocks: list[Block]) -> list[Block]:
    call_ids = {b.payload.get("id") for b in blocks if b.kind == BlockKind.TOOL_CALL}
    results: dict[object, list[Block]] = {}
    for block in blocks:
        if block.kind == BlockKind.TOOL_USE and block.payload.get("id") in call_ids:
            results.setdefault(block.payload.get("id"), []).append(block)

    ordered: list[Block] = []
    pending_run: list[Block] = []  # a run of consecutive tool_call blocks

    def flush() -> None:
        ordered.extend(pending_run)
        for call in pending_run:
            ordered.extend(results.pop(call.payload.get("id"), []))
        pending_run.clear()

    for block in blocks:
        if block.kind == BlockKind.TOOL_CALL:
            pending_run.append(block)
            continue
        flush()
        is_matched_result = block.kind == BlockKind.TOOL_USE and block.payload.get("id") in call_ids
        if not is_matched_result:
            ordered.append(block)
    flush()
    return ordered


def tool_result_reorder_middleware(inner: Handler) -> Handler:
    async def handle(turn: Turn, ctx: RunContext) -> Turn:
        turn.blocks = reorder_tool_results(turn.blocks)
        return await inner(turn, ctx)

    return handle
