"""A pydantic-ai agent with one tool, served by webchat (``pip install 'webchat[pydantic-ai]'``).

webchat runs the agent with streaming: its text streams as ``llm.delta``, its tool calls and
returns show as tool cards, its thinking as thinking frames, its usage on ``llm.final``, and
each run gets the conversation so far as message history.

    # profiles.yaml
    profiles:
      - slug: weather
        agent: agent_pydantic_ai:agent      # run the server from examples/, or set PYTHONPATH
        default_prompt: Answer in one sentence.

    OPENAI_API_KEY=sk-... webchat serve --profiles profiles.yaml

The model is ``WEBCHAT_AGENT_MODEL`` (any pydantic-ai model name; default
``openai:gpt-4o-mini``; ``test`` runs pydantic-ai's ``TestModel``, no key needed). It is checked
on the first run, not at import, so the server starts without a key.
"""

from __future__ import annotations

import os

from pydantic_ai import Agent

agent = Agent(
    os.environ.get("WEBCHAT_AGENT_MODEL", "openai:gpt-4o-mini"),
    instructions="You report the weather. Use the forecast tool for any city asked about.",
    defer_model_check=True,
)


@agent.tool_plain
def forecast(city: str) -> str:
    """Tomorrow's weather in a city."""
    return f"Sunny and 21 °C in {city}."
