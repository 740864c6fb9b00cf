"""Logs: the run and request a record belongs to, and ``--log-format json``.

``conv_id``, ``inference_id`` and ``user`` live in context variables set where they become
known (the request middleware, the scheduler as it starts a run); the run's task copies
them, so every record a run logs, however deep, carries its ids without being passed them.

With ``log_format: json`` every record, uvicorn's access log included, is one JSON object on
one line. Provider keys and the deployment's secrets are replaced before a record is written,
should any code ever log one, and the values of credential-like query parameters (OIDC's
``code`` and ``state``, tokens) are dropped from access log lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from webchat.settings import ServerSettings

__all__ = [
    "JsonFormatter",
    "LogFormat",
    "configure_logging",
    "log_context",
    "log_fields",
    "logging_config",
    "settings_secrets",
]

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"
SENSITIVE_QUERY = re.compile(
    r"(?i)([?&](?:code|state|token|access_token|id_token|api_key|key|password|secret)=)[^&\s\"]*"
)

_conv_id: ContextVar[str | None] = ContextVar("webchat_log_conv_id", default=None)
_inference_id: ContextVar[str | None] = ContextVar("webchat_log_inference_id", default=None)
_user: ContextVar[str | None] = ContextVar("webchat_log_user", default=None)
_FIELDS = {"conv_id": _conv_id, "inference_id": _inference_id, "user": _user}


def log_fields() -> dict[str, str]:
    """The ids known in this context (only those that are set)."""
    return {name: value for name, var in _FIELDS.items() if (value := var.get()) is not None}


@contextlib.contextmanager
def log_context(
    *, conv_id: str | None = None, inference_id: str | None = None, user: str | None = None
) -> Iterator[None]:
    """Set the given ids for the block (and for every task it starts)."""
    given = {"conv_id": conv_id, "inference_id": inference_id, "user": user}
    tokens = [(_FIELDS[name], _FIELDS[name].set(value)) for name, value in given.items() if value]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            with contextlib.suppress(ValueError):
                var.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, the ids of
    ``log_fields``, then the trace ids and the exception when there are."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(log_fields())
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            entry.update(_access_fields(record.args))
        entry.update(_trace_fields())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return self.redact(json.dumps(entry, ensure_ascii=False, default=str))

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
            # The same secret as it appears inside a JSON string.
            escaped = json.dumps(secret)[1:-1]
            if escaped != secret:
                text = text.replace(escaped, REDACTED)
        return SENSITIVE_QUERY.sub(r"\1" + REDACTED, text)


def _access_fields(args: tuple[Any, ...]) -> dict[str, Any]:
    """uvicorn's access record arguments: client, method, path, HTTP version, status."""
    if len(args) != 5:
        return {}
    client, method, path, _version, status = args
    return {"client": client, "method": method, "path": path, "status": status}


def _trace_fields() -> dict[str, str]:
    from webchat.observability.tracing import current_trace_ids

    ids = current_trace_ids()
    return {"trace_id": ids[0], "span_id": ids[1]} if ids else {}


def settings_secrets(settings: ServerSettings) -> list[str]:
    """Every secret value the settings hold (provider keys, the deployment's secret, the
    OIDC client secret): what a JSON log line must never contain."""
    held = (
        settings.openai_api_key,
        settings.anthropic_api_key,
        settings.secret_key,
        settings.oidc_client_secret,
    )
    return [secret.get_secret_value() for secret in held if secret is not None]


def logging_config(
    level: str, log_format: LogFormat, secrets: Iterable[str] = ()
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the root logger and uvicorn's loggers, which
    uvicorn takes as its ``log_config`` (so its access log is formatted alike)."""
    formatter: dict[str, Any]
    if log_format == "json":
        formatter = {"()": JsonFormatter, "secrets": list(secrets)}
    else:
        formatter = {"format": TEXT_FORMAT}
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "webchat",
        "stream": "ext://sys.stderr",
    }
    uvicorn = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"webchat": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": uvicorn,
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": uvicorn,
        },
    }


def configure_logging(
    level: str, log_format: LogFormat, secrets: Iterable[str] = ()
) -> dict[str, Any]:
    """Apply ``logging_config`` and return it (to hand to uvicorn)."""
    config = logging_config(level, log_format, secrets)
    logging.config.dictConfig(config)
    return config
