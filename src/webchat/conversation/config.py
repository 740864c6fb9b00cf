"""EngineConfig: every input that shapes a conversation's engine, and its signature.

The signature is canonical JSON (sorted keys, no insignificant whitespace, UTF-8), so two
processes given the same inputs agree on it byte for byte, and a human can read it in a
debugger. Secrets never enter it: each is replaced by a short fingerprint, so rotating a key
still changes the signature (and rebuilds the engine) without revealing the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from webchat.engines.settings import StepSettings
from webchat.profiles.models import MiddlewareUse, ToolLoopOptions
from webchat.tools.mcp import McpServerConfig

_SECRET_KEY = re.compile(r"(^|_)(api_?key|secret|token|password|authorization)$", re.IGNORECASE)


def fingerprint(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def redact(value: Any) -> Any:
    """A copy of JSON-like data with every secret-named field replaced by its fingerprint."""
    if isinstance(value, dict):
        return {
            k: (
                fingerprint(str(v))
                if _SECRET_KEY.search(str(k)) and v not in (None, "")
                else redact(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


class EngineConfig(BaseModel):
    """A plain, immutable value: profile slug, prompt, middleware uses, tools, settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile_slug: str
    system_prompt: str = ""
    middlewares: tuple[MiddlewareUse, ...] = ()
    tools: tuple[str, ...] = ()
    step_settings: StepSettings = StepSettings()
    tool_loop: ToolLoopOptions = ToolLoopOptions()
    mcp_servers: tuple[McpServerConfig, ...] = ()
    """The profile's MCP servers (never from a request); their env/headers are secrets."""
    agent: str | None = None
    """A Python agent's import path, in place of the provider engine (see ``webchat.agents``)."""

    def public_dict(self) -> dict[str, Any]:
        """The config as JSON data with secrets fingerprinted: safe to log, show or sign."""
        data: dict[str, Any] = redact(self.model_dump(mode="json"))
        key: SecretStr | None = self.step_settings.api_key
        data["step_settings"]["api_key"] = (
            fingerprint(key.get_secret_value()) if key is not None else None
        )
        if data.get("agent") is None:
            # Absent rather than null: configs without an agent keep the signature they had
            # before agents existed, so stored conversations are not rebuilt for nothing.
            data.pop("agent", None)
        # Every env/header value of an MCP server is a secret, whatever its name: only its
        # fingerprint is signed. Absent when there are none, like ``agent``.
        servers = [server.public_dict(fingerprint) for server in self.mcp_servers]
        if servers:
            data["mcp_servers"] = servers
        else:
            data.pop("mcp_servers", None)
        return data

    def signature(self) -> str:
        return json.dumps(
            self.public_dict(),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
