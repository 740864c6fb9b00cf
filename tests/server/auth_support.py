"""Users for the auth tests: a users file with alice, bob (users) and root (admin), and the
fixtures a test module imports to get them (``team``) and an in-process app that signs them
in (``users_client``, ``--auth users``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from tests.server.conftest import AppClient, ClientFactory
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


@pytest.fixture
def team(tmp_path: Path) -> Team:
    return make_team(tmp_path)


@pytest.fixture
async def users_client(make_client: ClientFactory, team: Team) -> AsyncIterator[AppClient]:
    async with make_client(auth="users", users=team.path) as client:
        yield client
