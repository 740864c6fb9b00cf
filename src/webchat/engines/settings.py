"""Provider settings ("step settings"): which API, which model, and how to call it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

ApiType = Literal["offline", "openai", "anthropic"]


class StepSettings(BaseModel):
    """Everything an engine needs to talk to its provider.

    ``api_key`` is a ``SecretStr`` so it never prints, logs or serialises in clear by accident.
    """

    model_config = ConfigDict(extra="forbid")

    api_type: ApiType = "offline"
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, gt=0)
    stop: list[str] | None = None
    base_url: str | None = None
    timeout: float = Field(default=60.0, gt=0, description="seconds for one provider call")
    max_retries: int = Field(default=2, ge=0, le=10)
    api_key: SecretStr | None = None
    # Offline engine only.
    tokens_per_second: float = Field(default=0.0, ge=0, description="0 = as fast as possible")
    answer_tokens: int = Field(default=24, ge=1, le=100_000)

    def resolved_model(self) -> str:
        if self.model:
            return self.model
        return {
            "offline": "offline",
            "openai": "gpt-4o-mini",
            "anthropic": "claude-sonnet-4-5",
        }[self.api_type]
