"""Server settings, layered: defaults < config file (YAML) < ``WEBCHAT_*`` env < flags.

Provider keys are read from ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` (or their ``WEBCHAT_``
forms) and held as ``SecretStr``, so they never print or serialise in clear.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from webchat.auth.principal import AuthMode
from webchat.profiles import BusyPolicy
from webchat.storage.postgres.url import check_postgres_url, is_postgres_url

MiB = 1024 * 1024


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the source and the field."""


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WEBCHAT_", extra="forbid", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    root: str = Field(default="", description="URL prefix to mount the app under, e.g. /chat")
    profiles: Path | None = Field(default=None, description="profiles YAML file")
    app: str | None = Field(
        default=None,
        description="'package.module:attribute' of a function (or an object with a setup "
        "method) that takes the EngineBuilder and registers tools, middlewares and sink "
        "wrappers on it, before profiles are checked",
    )
    transport: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_maxlen: int = Field(default=10_000, ge=100)
    db: str = Field(
        default="webchat.sqlite3",
        description="SQLite file, :memory:, or a postgresql:// URL (the store of record)",
    )
    idle_timeout: float = Field(
        default=60.0, gt=0, description="seconds a WebSocket may stay silent before it is closed"
    )
    evict_after: float = Field(
        default=600.0, gt=0, description="seconds an unused conversation stays in memory"
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="WebSocket origins allowed besides the server's own"
    )
    busy_policy: BusyPolicy = "reject"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        default="text", description="text, or json: one JSON object per log line"
    )
    otel_capture_content: bool = Field(
        default=False,
        description="record prompts, outputs and tool arguments/results in OpenTelemetry "
        "spans (they are user data: off unless asked for)",
    )
    max_body_bytes: int = Field(default=1 * MiB, ge=1024)
    max_prompt_chars: int = Field(default=100_000, ge=1)
    attachment_max_bytes: int = Field(
        default=5 * MiB, ge=1, description="the largest uploaded file accepted (413 beyond)"
    )
    attachment_max_files: int = Field(
        default=10, ge=1, description="the most attachments one message may carry (413 beyond)"
    )
    snapshot_dir: Path | None = Field(default=None, description="write YAML turn snapshots here")
    # -- who may use the server (see the README's "Security") ------------------------------
    auth: AuthMode | None = Field(
        default=None,
        description="none, users, proxy or oidc; unset means none on a loopback address, "
        "and a refusal to start on any other",
    )
    users: Path = Field(
        default=Path("webchat-users.yaml"), description="users file of --auth users (YAML)"
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="the deployment's secret (session cookies, key fingerprints); the same "
        "on every process. Unset: read from (or created in) secret_file, or Redis",
    )
    secret_file: Path | None = Field(
        default=None, description="where the generated secret is kept (default: beside db)"
    )
    session_max_age: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="seconds a browser login lasts"
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header names the server answers to (default: the loopback names "
        "when bound to loopback; required with auth on any other address); '*' for any",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs of reverse proxies whose X-Forwarded-* and user headers are trusted",
    )
    proxy_user_header: str = "X-Forwarded-User"
    proxy_email_header: str | None = "X-Forwarded-Email"
    proxy_groups_header: str | None = "X-Forwarded-Groups"
    admin_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="proxy/oidc groups whose members are admins"
    )
    oidc_issuer: str | None = Field(default=None, description="OpenID Connect issuer URL")
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: str = "openid email profile"
    oidc_groups_claim: str = "groups"
    oidc_allowed_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="when set, only members of these groups may log in"
    )
    # -- quotas, per user ---------------------------------------------------------------
    max_active_runs: int = Field(default=4, ge=1, description="concurrent runs per user")
    runs_per_minute: int = Field(default=30, ge=1, description="runs a user may start a minute")
    max_conversations: int = Field(default=1000, ge=1, description="stored conversations per user")
    auth_failures_per_minute: int = Field(
        default=10, ge=1, description="failed log-ins and bad credentials per client address"
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("openai_api_key", "OPENAI_API_KEY")
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("anthropic_api_key", "ANTHROPIC_API_KEY")
    )

    @field_validator(
        "allowed_origins",
        "allowed_hosts",
        "trusted_proxies",
        "admin_groups",
        "oidc_allowed_groups",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip().rstrip("/") for v in value.split(",") if v.strip()]
        return value

    @field_validator("db")
    @classmethod
    def _check_db(cls, value: str) -> str:
        # The message never repeats the value: a URL may hold a password.
        if is_postgres_url(value):
            check_postgres_url(value)
        elif "://" in value:
            raise ValueError("a database URL must start with postgresql:// (or give a file)")
        return value

    @field_validator("root")
    @classmethod
    def _normalise_root(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        return value if not value or value.startswith("/") else "/" + value

    @field_validator(
        "openai_api_key",
        "anthropic_api_key",
        "secret_key",
        "oidc_client_secret",
        "auth",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must be a mapping of setting: value")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - set(ServerSettings.model_fields))
    if unknown:
        raise SettingsError(f"config file {path}: unknown setting(s) {unknown}")
    return values


def load_settings(config_file: str | Path | None = None, **flags: Any) -> ServerSettings:
    """Settings from every layer; ``flags`` are the command-line values that were given."""
    file_values = _read_config_file(Path(config_file)) if config_file else {}
    given = {k: v for k, v in flags.items() if v is not None}

    class LayeredSettings(ServerSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # First wins: flags, then environment, then the config file, then defaults.
            return (init_settings, env_settings, InitSettingsSource(settings_cls, file_values))

    try:
        layered = LayeredSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
    return ServerSettings.model_construct(**dict(layered))
