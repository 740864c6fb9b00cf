"""Give the model its system prompt, exactly once per transcript.

The tool loop calls the chain several times per run and every run starts from the previous
transcript, so the middleware marks the block it touched with the prompt it applied. A marked
block with the same prompt is left alone; a different prompt (the profile or an override
changed) replaces what this middleware added, never the user's own system text.
"""

from __future__ import annotations

from webchat.engines.base import Handler, RunContext
from webchat.middleware.base import Middleware
from webchat.turns import Block, BlockKind, Turn

APPLIED = "webchat.system_prompt"
BASE_TEXT = "webchat.system_prompt.base"


def apply_system_prompt(turn: Turn, prompt: str) -> None:
    """Insert a system block, or append to the existing one, unless already applied."""
    block = next((b for b in turn.blocks if b.kind == BlockKind.SYSTEM), None)
    if block is None:
        block = Block.system(prompt)
        block.metadata.update({APPLIED: prompt, BASE_TEXT: ""})
        turn.blocks.insert(0, block)
        return
    if block.metadata.get(APPLIED) == prompt:
        return
    base = block.metadata.get(BASE_TEXT, block.text)
    block.payload["text"] = f"{base}\n\n{prompt}" if base else prompt
    block.metadata.update({APPLIED: prompt, BASE_TEXT: base})


def system_prompt_middleware(prompt: str) -> Middleware:
    def wrap(inner: Handler) -> Handler:
        async def handle(turn: Turn, ctx: RunContext) -> Turn:
            if prompt:
                apply_system_prompt(turn, prompt)
            return await inner(turn, ctx)

        return handle

    return wrap
