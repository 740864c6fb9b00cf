import json
import subprocess
import sys

import pytest
from pydantic import SecretStr

from webchat.conversation.config import EngineConfig, fingerprint
from webchat.engines import StepSettings
from webchat.profiles import MiddlewareUse

SECRET = "sk-live-ABCDEF0123456789abcdef"


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


SCRIPT = """
import json, sys
from webchat.conversation.config import EngineConfig
print(EngineConfig.model_validate_json(sys.stdin.read()).signature())
"""


def test_signature_is_canonical_json_and_identical_in_another_process():
    config = make()
    sig = config.signature()
    assert json.loads(sig)["profile_slug"] == "default"
    assert sig == json.dumps(json.loads(sig), sort_keys=True, separators=(",", ":"))
    payload = config.model_dump_json()
    payload = payload.replace('"**********"', json.dumps(SECRET))  # SecretStr dumps masked
    other = subprocess.run(
        [sys.executable, "-c", SCRIPT], input=payload, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == sig


def test_signature_ignores_dict_key_order():
    a = make(middlewares=(MiddlewareUse(name="logging", config={"x": 1, "y": {"b": 2, "a": 1}}),))
    b = make(middlewares=(MiddlewareUse(name="logging", config={"y": {"a": 1, "b": 2}, "x": 1}),))
    assert a.signature() == b.signature()


def test_signature_never_contains_a_secret():
    config = make(
        middlewares=(
            MiddlewareUse(name="logging", config={"api_key": "mw-SECRET-1", "token": "tk-2"}),
        )
    )
    sig = config.signature()
    assert SECRET not in sig and "mw-SECRET-1" not in sig and "tk-2" not in sig
    assert fingerprint(SECRET) in sig
    assert "max_tokens" in sig  # a field merely containing "token" is not a secret


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
    assert make(**change).signature() != make().signature()


def test_same_inputs_same_signature():
    assert make().signature() == make().signature()
    assert (
        make(step_settings=StepSettings(api_key=SecretStr(SECRET))).signature()
        == make(step_settings=StepSettings(api_key=SECRET)).signature()
    )
