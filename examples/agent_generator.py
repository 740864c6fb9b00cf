"""A custom agent: an async generator that streams from any OpenAI-compatible server.

Everything the agent does is plain Python with the official ``openai`` SDK: webchat hands it
the conversation in the SDK's own message format and streams whatever it yields. The
profile's tools are offered to the model, and each call the model makes goes through
``request.call_tool``, which shows it as a tool card in every browser watching.

    # profiles.yaml
    profiles:
      - slug: my-agent
        agent: agent_generator:agent        # run the server from examples/, or set PYTHONPATH
        tools: [calculator]
        step_settings: {model: llama3.1}

    OPENAI_BASE_URL=http://127.0.0.1:11434/v1 webchat serve --profiles profiles.yaml
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator
from typing import Any

import openai
from openai import omit

from webchat.agents import AgentRequest
from webchat.events import Usage
from webchat.tools import ToolError

MAX_STEPS = 5


async def agent(request: AgentRequest) -> AsyncGenerator[object, None]:
    """Answer with the model at ``OPENAI_BASE_URL``, running the tools it asks for."""
    client = openai.AsyncOpenAI(
        base_url=os.environ.get("OPENAI_BASE_URL") or request.settings.base_url,
        api_key=os.environ.get("OPENAI_API_KEY") or "sk-no-key-configured",
        max_retries=0,
    )
    model = request.settings.model or os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
    messages: list[Any] = list(request.messages)
    tools = request.openai_tools()
    try:
        for _ in range(MAX_STEPS):
            stream = await client.chat.completions.create(
                model=model,
                messages=messages,
                tools=tools or omit,
                stream=True,
                stream_options={"include_usage": True},
            )
            text, calls = "", {}
            async for chunk in stream:
                if chunk.usage is not None:
                    yield Usage(
                        input_tokens=chunk.usage.prompt_tokens,
                        output_tokens=chunk.usage.completion_tokens,
                    )
                for choice in chunk.choices:
                    if choice.delta.content:
                        text += choice.delta.content
                        yield choice.delta.content  # streams as llm.delta
                    for part in choice.delta.tool_calls or ():
                        call = calls.setdefault(part.index, {"id": "", "name": "", "args": ""})
                        call["id"] = call["id"] or (part.id or "")
                        if part.function is not None:
                            call["name"] = call["name"] or (part.function.name or "")
                            call["args"] += part.function.arguments or ""
            if not calls:
                return
            messages.append(
                {
                    "role": "assistant",
                    "content": text or None,
                    "tool_calls": [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": c["args"]},
                        }
                        for c in calls.values()
                    ],
                }
            )
            for c in calls.values():
                try:
                    result = await request.call_tool(c["name"], c["args"])  # a tool card
                except ToolError as exc:
                    result = f"error: {exc}"
                messages.append(
                    {"role": "tool", "tool_call_id": c["id"], "content": json.dumps(result)}
                )
        yield "\n(stopped: the model kept asking for tools)"
    finally:
        await client.close()  # also runs when the user presses Stop
