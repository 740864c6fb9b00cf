"""The ``webchat`` command line."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

app = typer.Typer(help="Chat with LLM agents in the browser.", no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Start the server on its embedded defaults (offline engine, in-memory transport)."""
    import uvicorn

    from webchat.server import create_app

    uvicorn.run(create_app(), host=host, port=port, log_level=log_level)


@app.command()
def demo(
    prompt: Annotated[str | None, typer.Argument(help="What to ask the offline engine.")] = None,
    show_turn: Annotated[bool, typer.Option(help="Print the final turn as YAML.")] = False,
) -> None:
    """Run the offline engine with the calculator tool and print its events as JSON lines."""
    from webchat.demo import DEFAULT_PROMPT, run_demo

    asyncio.run(run_demo(prompt or DEFAULT_PROMPT, show_turn=show_turn))
