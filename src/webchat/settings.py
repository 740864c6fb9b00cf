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

from webchat.profiles import BusyPolicy

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
    db: str = Field(default="webchat.sqlite3", description="SQLite file, or :memory:")
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
    max_body_bytes: int = Field(default=1 * MiB, ge=1024)
    max_prompt_chars: int = Field(default=100_000, ge=1)
    snapshot_dir: Path | None = Field(default=None, description="write YAML turn snapshots here")
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("openai_api_key", "OPENAI_API_KEY")
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("anthropic_api_key", "ANTHROPIC_API_KEY")
    )

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip().rstrip("/") for v in value.split(",") if v.strip()]
        return value

    @field_validator("root")
    @classmethod
    def _normalise_root(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        return value if not value or value.startswith("/") else "/" + value

    @field_validator("openai_api_key", "anthropic_api_key", mode="before")
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
