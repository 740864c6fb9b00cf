import hashlib
import json
import re
import subprocess
import sys

import pytest
from pydantic import SecretStr

from webchat.conversation.builder import EngineBuilder, ProviderKeys
from webchat.conversation.config import (
    EngineConfig,
    derive_fingerprint_key,
    fingerprint,
    redact,
)
from webchat.conversation.manager import ConversationManager
from webchat.conversation.subscribers import SubscriberFactory
from webchat.engines import StepSettings
from webchat.profiles import MiddlewareUse, Profile, ProfileRegistry
from webchat.tools.mcp import McpStdioServer
from webchat.transport import InMemoryTransport

SECRET = "sk-live-ABCDEF0123456789abcdef"
KEY = b"fingerprint-key-for-tests-0123456"
OTHER_KEY = b"another-fingerprint-key-98765432"


def make(**changes) -> EngineConfig:
    base = dict(
        profile_slug="default",
        system_prompt="Be nice.",
        middlewares=(MiddlewareUse(name="logging", config={"level": "info", "tags": ["a", "b"]}),),
        tools=("calculator",),
        step_settings=StepSettings(api_type="openai", model="m", temperature=0.5, api_key=SECRET),
    )
    base.update(changes)
    return EngineConfig(**base)


def plain_sha256_prefixes(secret: str) -> list[str]:
    """Every 12+ character prefix of the unkeyed digest: what the old fingerprint leaked."""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return [digest[:n] for n in range(12, len(digest) + 1)]


SCRIPT = """
import sys
from webchat.conversation.config import EngineConfig
print(EngineConfig.model_validate_json(sys.stdin.read()).signature(bytes.fromhex(sys.argv[1])))
"""


def test_signature_is_canonical_json_and_identical_in_another_process():
    config = make()
    sig = config.signature(KEY)
    assert json.loads(sig)["profile_slug"] == "default"
    assert sig == json.dumps(json.loads(sig), sort_keys=True, separators=(",", ":"))
    payload = config.model_dump_json()
    payload = payload.replace('"**********"', json.dumps(SECRET))  # SecretStr dumps masked
    other = subprocess.run(
        [sys.executable, "-c", SCRIPT, KEY.hex()],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert other == sig


def test_signature_ignores_dict_key_order():
    a = make(middlewares=(MiddlewareUse(name="logging", config={"x": 1, "y": {"b": 2, "a": 1}}),))
    b = make(middlewares=(MiddlewareUse(name="logging", config={"y": {"a": 1, "b": 2}, "x": 1}),))
    assert a.signature(KEY) == b.signature(KEY)


def test_fingerprint_is_a_keyed_hmac():
    value = fingerprint(SECRET, KEY)
    assert re.fullmatch(r"hmac-sha256:[0-9a-f]{16}", value)
    assert value == fingerprint(SECRET, KEY)
    assert value != fingerprint(SECRET, OTHER_KEY)
    assert value != fingerprint("sk-other", KEY)
    assert value.removeprefix("hmac-sha256:") not in hashlib.sha256(SECRET.encode()).hexdigest()


def test_signature_never_contains_a_secret_nor_its_plain_hash():
    mcp = McpStdioServer.model_validate(
        {"name": "math", "command": "python", "env": {"MATH_SECRET": "env-SECRET-3"}}
    )
    config = make(
        middlewares=(
            MiddlewareUse(name="logging", config={"api_key": "mw-SECRET-1", "token": "tk-2"}),
        ),
        mcp_servers=(mcp,),
    )
    secrets = (SECRET, "mw-SECRET-1", "tk-2", "env-SECRET-3")
    for sig in (config.signature(KEY), config.signature(OTHER_KEY)):
        for secret in secrets:
            assert secret not in sig
            # The unkeyed sha256 would let anyone holding the signature confirm a guess.
            assert not any(prefix in sig for prefix in plain_sha256_prefixes(secret))
    sig = config.signature(KEY)
    assert fingerprint(SECRET, KEY) in sig
    assert json.loads(sig)["mcp_servers"][0]["env"] == {
        "MATH_SECRET": fingerprint("env-SECRET-3", KEY)
    }
    assert "max_tokens" in sig  # a field merely containing "token" is not a secret


def test_redact_fingerprints_secret_named_fields_under_the_key():
    data = {"api_key": "a", "nested": [{"password": "p", "plain": "x"}], "token": ""}
    assert redact(data, KEY) == {
        "api_key": fingerprint("a", KEY),
        "nested": [{"password": fingerprint("p", KEY), "plain": "x"}],
        "token": "",
    }


@pytest.mark.parametrize(
    "change",
    [
        {
            "step_settings": StepSettings(
                api_type="openai", model="m", temperature=0.5, api_key="sk-other"
            )
        },
        {"system_prompt": "Be terse."},
        {
            "middlewares": (
                MiddlewareUse(name="logging", config={"level": "debug", "tags": ["a", "b"]}),
            )
        },
        {"tools": ()},
        {
            "step_settings": StepSettings(
                api_type="openai", model="m", temperature=0.7, api_key=SECRET
            )
        },
        {
            "step_settings": StepSettings(
                api_type="openai", model="m2", temperature=0.5, api_key=SECRET
            )
        },
        {"profile_slug": "other"},
    ],
    ids=["key", "prompt", "middleware-config", "tool", "temperature", "model", "profile"],
)
def test_signature_changes_with_every_input(change):
    assert make(**change).signature(KEY) != make().signature(KEY)


def test_same_inputs_same_signature():
    assert make().signature(KEY) == make().signature(KEY)
    assert make(step_settings=StepSettings(api_key=SecretStr(SECRET))).signature(KEY) == make(
        step_settings=StepSettings(api_key=SECRET)
    ).signature(KEY)


# -- through the builder: the key every signature of a deployment is made with ------------

PROFILES = ProfileRegistry([Profile(slug="gpt", step_settings={"api_type": "openai"})])


def builder(key: bytes | None, api_key: str = SECRET) -> EngineBuilder:
    return EngineBuilder(
        PROFILES,
        InMemoryTransport(),
        provider_keys=ProviderKeys(openai=api_key),
        fingerprint_key=key,
    )


def signature(b: EngineBuilder) -> str:
    return b.signature(b.build_config("gpt"))


def api_key_fingerprint(b: EngineBuilder) -> str:
    value: str = json.loads(signature(b))["step_settings"]["api_key"]
    return value


def test_builders_with_one_key_agree_and_with_another_key_do_not():
    # Two processes of one deployment are given the same key: same signature, byte for byte.
    assert signature(builder(KEY)) == signature(builder(KEY))
    assert api_key_fingerprint(builder(KEY)) == fingerprint(SECRET, KEY)
    assert builder(KEY).fingerprint(SECRET) == fingerprint(SECRET, KEY)
    # Another deployment (another key): the same secret is not recognisable across them.
    assert api_key_fingerprint(builder(KEY)) != api_key_fingerprint(builder(OTHER_KEY))


def test_rotating_the_api_key_changes_the_builders_signature():
    assert signature(builder(KEY)) != signature(builder(KEY, api_key="sk-rotated"))
    assert signature(builder(None, "x")) != signature(builder(None, "y"))


def test_without_a_key_each_builder_makes_its_own():
    one, two = builder(None), builder(None)
    assert signature(one) == signature(one)  # stable within the builder (the process)...
    assert api_key_fingerprint(one) != api_key_fingerprint(two)  # ...and private to it
    for b in (one, two):
        assert SECRET not in signature(b)
        assert not any(p in signature(b) for p in plain_sha256_prefixes(SECRET))


def test_an_empty_key_is_refused():
    with pytest.raises(ValueError):
        builder(b"")


def test_derived_key_is_stable_per_secret_and_not_the_secret():
    derived = derive_fingerprint_key(b"deployment-secret")
    assert derived == derive_fingerprint_key("deployment-secret")
    assert len(derived) == 32 and derived != b"deployment-secret"
    assert derived != derive_fingerprint_key(b"another-secret")


async def test_the_manager_signs_with_its_builders_key():
    transport = InMemoryTransport()
    engine_builder = builder(KEY)
    manager = ConversationManager(engine_builder, SubscriberFactory(transport))
    try:
        conversation = await manager.get_or_create("c1", "gpt")
        assert conversation.signature == signature(builder(KEY))
        assert fingerprint(SECRET, KEY) in conversation.signature
        assert await manager.get_or_create("c1", "gpt") is conversation
        assert conversation.rebuilds == 0
    finally:
        await manager.close()
        await transport.close()
