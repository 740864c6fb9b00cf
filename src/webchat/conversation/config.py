"""EngineConfig: every input that shapes a conversation's engine, and its signature.

The signature is canonical JSON (sorted keys, no insignificant whitespace, UTF-8), so two
processes given the same inputs agree on it byte for byte, and a human can read it in a
debugger. Secrets never enter it: each is replaced by a short fingerprint, so rotating a key
still changes the signature (and rebuilds the engine) without revealing the key.

Fingerprints are keyed (HMAC-SHA256 under a fingerprint key), because the signature is shown
to API clients: a plain hash of a key would let anyone who sees it confirm a guessed key
offline. Without the fingerprint key a fingerprint says nothing about the secret; processes
that must agree on signatures (every process of a deployment) must share the key. The key is
always passed in, never read from a global, so which key signs what is visible at each call.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from webchat.engines.settings import StepSettings
from webchat.profiles.models import MiddlewareUse, ToolLoopOptions
from webchat.tools.mcp import McpServerConfig

_SECRET_KEY = re.compile(r"(^|_)(api_?key|secret|token|password|authorization)$", re.IGNORECASE)


FINGERPRINT_PREFIX = "hmac-sha256:"


def fingerprint(secret: str, key: bytes) -> str:
    """A short keyed digest of ``secret``: equal for equal secrets under one ``key``, and
    useless for checking a guess without ``key``. 16 hex digits (64 bits) tell rotated keys
    apart; they are not meant to resist a search by someone who holds ``key``."""
    digest = hmac.new(key, secret.encode("utf-8"), hashlib.sha256).hexdigest()
    return FINGERPRINT_PREFIX + digest[:16]


def derive_fingerprint_key(deployment_secret: str | bytes) -> bytes:
    """The fingerprint key for a deployment, derived from its one shared secret.

    Derived rather than used as is, so a fingerprint (which is shown to clients) is never an
    HMAC under the very key that signs session cookies or anything else.
    """
    secret = (
        deployment_secret.encode("utf-8")
        if isinstance(deployment_secret, str)
        else deployment_secret
    )
    return hmac.new(secret, b"webchat.fingerprint.v1", hashlib.sha256).digest()


def redact(value: Any, key: bytes) -> Any:
    """A copy of JSON-like data with every secret-named field replaced by its fingerprint
    under ``key``."""
    if isinstance(value, dict):
        return {
            k: (
                fingerprint(str(v), key)
                if _SECRET_KEY.search(str(k)) and v not in (None, "")
                else redact(v, key)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, key) for v in value]
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

    def public_dict(self, fingerprint_key: bytes) -> dict[str, Any]:
        """The config as JSON data with secrets fingerprinted under ``fingerprint_key``: safe
        to log, show or sign."""
        data: dict[str, Any] = redact(self.model_dump(mode="json"), fingerprint_key)
        api_key: SecretStr | None = self.step_settings.api_key
        data["step_settings"]["api_key"] = (
            fingerprint(api_key.get_secret_value(), fingerprint_key)
            if api_key is not None
            else None
        )
        if data.get("agent") is None:
            # Absent rather than null: configs without an agent keep the signature they had
            # before agents existed, so stored conversations are not rebuilt for nothing.
            data.pop("agent", None)
        # Every env/header value of an MCP server is a secret, whatever its name: only its
        # fingerprint is signed. Absent when there are none, like ``agent``.
        keyed = functools.partial(fingerprint, key=fingerprint_key)
        servers = [server.public_dict(keyed) for server in self.mcp_servers]
        if servers:
            data["mcp_servers"] = servers
        else:
            data.pop("mcp_servers", None)
        return data

    def signature(self, fingerprint_key: bytes) -> str:
        """The canonical JSON of ``public_dict``: equal configs give equal text in any process
        that uses the same ``fingerprint_key``. Usually called as ``EngineBuilder.signature``,
        which holds the deployment's key."""
        return json.dumps(
            self.public_dict(fingerprint_key),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
