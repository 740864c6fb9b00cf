"""The ``webchat`` command line: serve, list profiles, chat from a terminal, demo."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Chat with LLM agents in the browser.", no_args_is_help=True, add_completion=False
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML settings file (flags > WEBCHAT_* env > file)."),
]


def _settings(config: Path | None, **flags: Any) -> Any:
    from webchat.settings import SettingsError, load_settings

    try:
        return load_settings(config, **flags)
    except SettingsError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
    root: Annotated[str | None, typer.Option(help="Serve under this URL prefix.")] = None,
    profiles: Annotated[Path | None, typer.Option(help="Profiles YAML file.")] = None,
    transport: Annotated[str | None, typer.Option(help="memory or redis.")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL.")] = None,
    db: Annotated[str | None, typer.Option(help="SQLite file, or :memory:.")] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Seconds a silent WebSocket stays open.")
    ] = None,
    evict_after: Annotated[
        float | None, typer.Option(help="Seconds an unused conversation stays in memory.")
    ] = None,
    allowed_origins: Annotated[
        str | None, typer.Option(help="Comma-separated extra WebSocket origins.")
    ] = None,
    busy_policy: Annotated[str | None, typer.Option(help="reject, enqueue or interrupt.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
    app_setup: Annotated[
        str | None,
        typer.Option(
            "--app", help="package.module:attribute registering tools/middlewares on the builder."
        ),
    ] = None,
) -> None:
    """Start the server. With no options: offline engine, in-memory transport, SQLite file."""
    from webchat.profiles import ProfileFileError
    from webchat.server import create_app
    from webchat.server.runner import serve as serve_app

    settings = _settings(
        config,
        host=host,
        port=port,
        root=root,
        profiles=profiles,
        transport=transport,
        redis_url=redis_url,
        db=db,
        idle_timeout=idle_timeout,
        evict_after=evict_after,
        allowed_origins=allowed_origins,
        busy_policy=busy_policy,
        log_level=log_level,
        app=app_setup,
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        application = create_app(settings)
    except (ProfileFileError, ValueError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    typer.echo(f"webchat on http://{settings.host}:{settings.port}{settings.root}/")
    # uvicorn shuts down cleanly on SIGINT/SIGTERM (runs cancelled with run.cancelled and
    # drained to every client, storage flushed), then re-raises the signal; a no-op handler
    # lets that end as a normal exit 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    serve_app(application, host=settings.host, port=settings.port, log_level=settings.log_level)


@app.command("profiles")
def list_profiles(
    config: ConfigOption = None,
    profiles: Annotated[Path | None, typer.Option(help="Profiles YAML file.")] = None,
) -> None:
    """List the profiles the server would offer (never prints keys)."""
    from webchat.profiles import ProfileFileError
    from webchat.server.app import load_profiles

    settings = _settings(config, profiles=profiles)
    try:
        registry = load_profiles(settings)
    except ProfileFileError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    for profile in registry.all():
        marker = "*" if profile.slug == registry.default_slug else " "
        tools = ",".join(profile.tools) or "-"
        typer.echo(
            f"{marker} {profile.slug:<16} {profile.step_settings.api_type:<9} "
            f"{profile.step_settings.resolved_model():<24} tools={tools} "
            f"overrides={'yes' if profile.allow_overrides else 'no'}  {profile.title}"
        )


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to say.")],
    conv: Annotated[
        str | None, typer.Option("--conv", help="Conversation id (new if omitted).")
    ] = None,
    url: Annotated[str, typer.Option(help="Server base URL.")] = "http://127.0.0.1:8000",
    profile: Annotated[str | None, typer.Option(help="Profile slug.")] = None,
    system_prompt: Annotated[
        str | None, typer.Option(help="Override the system prompt (if allowed).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300.0,
) -> None:
    """Send a prompt to a running server and stream the answer to the terminal."""
    from webchat.client import ChatClientError, stream_chat

    try:
        code = asyncio.run(
            stream_chat(
                url,
                prompt,
                conv_id=conv,
                profile=profile,
                system_prompt=system_prompt,
                timeout=timeout,
                out=sys.stdout,
                err=sys.stderr,
            )
        )
    except ChatClientError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@app.command()
def demo(
    prompt: Annotated[str | None, typer.Argument(help="What to ask the offline engine.")] = None,
    show_turn: Annotated[bool, typer.Option(help="Print the final turn as YAML.")] = False,
) -> None:
    """Run the offline engine with the calculator tool and print its events as JSON lines."""
    from webchat.demo import DEFAULT_PROMPT, run_demo

    asyncio.run(run_demo(prompt or DEFAULT_PROMPT, show_turn=show_turn))
