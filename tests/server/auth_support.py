"""Users for the auth tests: a users file with alice, bob (users) and root (admin)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher

from webchat.auth.users import UsersFile

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
"""Cheap argon2 parameters: the tests hash a handful of passwords, not production ones."""

PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-2", "root": "root-pass-3"}


@dataclass
class Team:
    path: Path
    tokens: dict[str, str]

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def users(self) -> UsersFile:
        users = UsersFile(self.path, hasher=FAST_HASHER)
        users.load()
        return users


def make_team(directory: Path) -> Team:
    path = directory / "users.yaml"
    users = UsersFile(path, hasher=FAST_HASHER)
    tokens = {
        name: users.add(name, password, admin=name == "root")
        for name, password in PASSWORDS.items()
    }
    return Team(path, tokens)
