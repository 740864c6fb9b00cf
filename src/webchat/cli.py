"""The ``webchat`` command line: serve, list profiles, chat from a terminal, demo."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from webchat.auth.users import UsersFile

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
    db: Annotated[
        str | None, typer.Option(help="SQLite file, :memory:, or a postgresql:// URL.")
    ] = None,
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
    log_format: Annotated[
        str | None, typer.Option(help="text, or json: one JSON object per log line.")
    ] = None,
    app_setup: Annotated[
        str | None,
        typer.Option(
            "--app", help="package.module:attribute registering tools/middlewares on the builder."
        ),
    ] = None,
    auth: Annotated[
        str | None,
        typer.Option(help="none, users, proxy or oidc (default: none on loopback only)."),
    ] = None,
    users: Annotated[Path | None, typer.Option(help="Users file of --auth users.")] = None,
    allowed_hosts: Annotated[
        str | None, typer.Option(help="Comma-separated Host names served ('*': any).")
    ] = None,
    trusted_proxies: Annotated[
        str | None, typer.Option(help="Comma-separated CIDRs of trusted reverse proxies.")
    ] = None,
) -> None:
    """Start the server. With no options: offline engine, in-memory transport, SQLite file."""
    from webchat.observability.logs import configure_logging, settings_secrets
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
        log_format=log_format,
        app=app_setup,
        auth=auth,
        users=users,
        allowed_hosts=allowed_hosts,
        trusted_proxies=trusted_proxies,
    )
    log_config = configure_logging(
        settings.log_level, settings.log_format, secrets=settings_secrets(settings)
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
    serve_app(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config,  # uvicorn's access log in the same format
    )


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
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="WEBCHAT_TOKEN",
            show_envvar=True,
            help="API token of a server run with --auth users (`webchat users token NAME`).",
        ),
    ] = None,
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
                token=token or None,
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


# -- webchat users: the users file of --auth users -----------------------------------------

users_app = typer.Typer(
    help="Manage the users file of --auth users (passwords and API tokens).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(users_app, name="users")

UsersFileOption = Annotated[
    Path | None,
    typer.Option("--users", help="Users file (default: the `users` setting, webchat-users.yaml)."),
]
UserName = Annotated[str, typer.Argument(help="User name (letters, digits, _ . @ -).")]


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def _users_file(config: Path | None, users: Path | None) -> UsersFile:
    from webchat.auth.users import UsersFile

    return UsersFile(_settings(config, users=users).users)


def _new_password(from_stdin: bool) -> str:
    """The new user's password: one line of stdin, or typed twice at a hidden prompt."""
    if from_stdin:
        line = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not line:
            _fail("--password-stdin: no password on stdin (one line is read)")
        return line
    if not sys.stdin.isatty():
        _fail("stdin is not a terminal: pass --password-stdin and write the password to stdin")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    return password


@users_app.command("add")
def users_add(
    name: UserName,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin.")] = False,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from one line of stdin."),
    ] = False,
    no_password: Annotated[
        bool,
        typer.Option("--no-password", help="No password: API token only (no browser log-in)."),
    ] = False,
    users: UsersFileOption = None,
    config: ConfigOption = None,
) -> None:
    """Add a user and print its API token (shown only this once)."""
    from webchat.auth.users import NAME_RULE, UsersFileError, valid_user_name

    if password_stdin and no_password:
        _fail("--password-stdin and --no-password exclude each other")
    store = _users_file(config, users)
    if not valid_user_name(name):  # before asking for a password
        _fail(f"invalid user name {name!r}: use {NAME_RULE}")
    try:
        store.load()
    except UsersFileError as exc:
        _fail(str(exc))
    if store.get(name) is not None:
        _fail(f"user {name!r} already exists in {store.path}")
    password = None if no_password else _new_password(password_stdin)
    try:
        token = store.add(name, password, admin=admin)
    except UsersFileError as exc:
        _fail(str(exc))
    role = "admin" if admin else "user"
    typer.echo(f"added {role} {name} to {store.path}; API token (shown only once):", err=True)
    typer.echo(token)


@users_app.command("token")
def users_token(name: UserName, users: UsersFileOption = None, config: ConfigOption = None) -> None:
    """Print a new API token for a user (its other tokens keep working)."""
    from webchat.auth.users import UsersFileError

    store = _users_file(config, users)
    try:
        token = store.issue_token(name)
    except UsersFileError as exc:
        _fail(str(exc))
    typer.echo(f"new API token of {name} (shown only once):", err=True)
    typer.echo(token)


@users_app.command("remove")
def users_remove(
    name: UserName, users: UsersFileOption = None, config: ConfigOption = None
) -> None:
    """Remove a user with its password and tokens; a running server signs it out at once."""
    from webchat.auth.users import UsersFileError

    store = _users_file(config, users)
    try:
        store.remove(name)
    except UsersFileError as exc:
        _fail(str(exc))
    typer.echo(f"removed {name} from {store.path}", err=True)


@users_app.command("list")
def users_list(users: UsersFileOption = None, config: ConfigOption = None) -> None:
    """List the users: name, role, number of tokens, whether it has a password (no hashes)."""
    from webchat.auth.users import UsersFileError

    store = _users_file(config, users)
    try:
        store.load()
    except UsersFileError as exc:
        _fail(str(exc))
    records = store.users()
    if not records:
        typer.echo(f"no users in {store.path}", err=True)
    for record in records:
        password = "yes" if record.password_hash else "no"
        typer.echo(
            f"{record.name:<24} {record.role:<5} tokens={len(record.tokens)} password={password}"
        )
