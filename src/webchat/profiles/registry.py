"""The set of profiles a server offers, loaded from YAML or built in."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from webchat.engines.settings import StepSettings
from webchat.errors import UnknownProfileError
from webchat.profiles.models import Profile

DEFAULT_SLUG = "default"
DEFAULT_PROMPT = "You are a helpful assistant. Be concise."


class ProfileFileError(ValueError):
    """A profiles file that cannot be used; the message says where and why."""


class ProfilesFile(BaseModel):
    profiles: list[Profile]


class ProfileRegistry:
    """Profiles by slug, in file order."""

    def __init__(self, profiles: Iterable[Profile]) -> None:
        self._profiles: dict[str, Profile] = {}
        for profile in profiles:
            if profile.slug in self._profiles:
                raise ProfileFileError(f"profile {profile.slug!r} is defined twice")
            _check_imports(profile)
            self._profiles[profile.slug] = profile
        if not self._profiles:
            raise ProfileFileError("at least one profile is required")

    def get(self, slug: str) -> Profile:
        try:
            return self._profiles[slug]
        except KeyError:
            raise UnknownProfileError(f"unknown profile {slug!r}", profile=slug) from None

    def __contains__(self, slug: object) -> bool:
        return slug in self._profiles

    def all(self) -> list[Profile]:
        return list(self._profiles.values())

    @property
    def default_slug(self) -> str:
        return DEFAULT_SLUG if DEFAULT_SLUG in self._profiles else next(iter(self._profiles))

    @classmethod
    def from_yaml_text(cls, text: str, *, source: str = "<profiles>") -> ProfileRegistry:
        try:
            data: Any = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ProfileFileError(f"{source}: not valid YAML: {exc}") from exc
        if isinstance(data, list):
            data = {"profiles": data}
        try:
            parsed = ProfilesFile.model_validate(data)
        except ValidationError as exc:
            raise ProfileFileError(f"{source}: {exc}") from exc
        return cls(parsed.profiles)

    @classmethod
    def from_file(cls, path: str | Path) -> ProfileRegistry:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileFileError(f"cannot read profiles file {path}: {exc.strerror}") from exc
        return cls.from_yaml_text(text, source=str(path))

    @classmethod
    def builtin(
        cls, *, openai_key: str | None = None, anthropic_key: str | None = None
    ) -> ProfileRegistry:
        """The ``default`` profile: a real provider when its key is configured, else offline."""
        if openai_key:
            settings = StepSettings(api_type="openai")
        elif anthropic_key:
            settings = StepSettings(api_type="anthropic")
        else:
            settings = StepSettings(api_type="offline", tokens_per_second=40)
        return cls(
            [
                Profile(
                    slug=DEFAULT_SLUG,
                    display_name="Default",
                    default_prompt=DEFAULT_PROMPT,
                    allow_overrides=True,
                    tools=["calculator"],
                    step_settings=settings,
                )
            ]
        )


def _check_imports(profile: Profile) -> None:
    """Import the agent and tools ``profile`` names by path, so a bad one stops the server at
    startup, with the profile and the path in the message, not a user's first message."""
    # Imported here: webchat.agents builds on engines and tools, which must not need profiles.
    from webchat.agents import ImportPathError, is_import_path, load_agent, load_tool

    if profile.agent is not None:
        try:
            load_agent(profile.agent)
        except ImportPathError as exc:
            raise ProfileFileError(
                f"profile {profile.slug!r}: agent {profile.agent!r} cannot be used: {exc}"
            ) from exc
    for entry in profile.tools:
        if is_import_path(entry):
            try:
                load_tool(entry)
            except ImportPathError as exc:
                raise ProfileFileError(
                    f"profile {profile.slug!r}: tool {entry!r} cannot be used: {exc}"
                ) from exc
