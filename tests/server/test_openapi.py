"""The OpenAPI document describes the API as it behaves.

Schemathesis generates requests for every documented route (valid ones and broken ones) and
sends them to the in-process app over ASGI; each response must be no server error, have a
documented status and content type, and a body of the documented shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from webchat.chat.service import CONV_ID_PATTERN
from webchat.server import create_app
from webchat.settings import ServerSettings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


PROFILES = ["default", "slow", "queue", "interrupting", "locked"]
CONVERSATIONS = ["c-1", "c-2"]


def steer_towards_real_requests(schema: BaseSchema) -> None:
    """Random profiles and conv ids are all unknown (404s, 400s): mix in ones that exist, so
    runs start, queue and collide, and the conversation routes answer 200s too."""

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
        if not isinstance(path_parameters, dict):
            return st.just(path_parameters)
        choices: dict[str, st.SearchStrategy[Any]] = {}
        if "profile" in path_parameters:
            choices["profile"] = st.sampled_from([*PROFILES, path_parameters["profile"]])
        if "conv_id" in path_parameters:
            choices["conv_id"] = st.sampled_from([*CONVERSATIONS, path_parameters["conv_id"]])
        return st.fixed_dictionaries(choices).map(lambda chosen: {**path_parameters, **chosen})

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return st.just(body)
        return st.fixed_dictionaries(
            {
                "conv_id": st.sampled_from([*CONVERSATIONS, body.get("conv_id")]),
                "overrides": st.sampled_from([None, body.get("overrides")]),
            }
        ).map(lambda chosen: {**body, **chosen})


@pytest.fixture
def api_schema(profiles_file: Path) -> BaseSchema:
    # schemathesis runs the app's lifespan itself, and ends it with the test.
    # schemathesis calls the app as http://testserver
    settings = ServerSettings(db=":memory:", profiles=profiles_file, allowed_hosts=["testserver"])
    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    steer_towards_real_requests(schema)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_route_answers_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


def test_the_document_declares_error_shapes_and_the_conv_id_pattern(profiles_file: Path) -> None:
    document = create_app(ServerSettings(db=":memory:", profiles=profiles_file)).openapi()
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    content = response["content"]["application/json"]["schema"]
                    if path.startswith("/v1/"):  # the OpenAI-compatible API: OpenAI's shape
                        assert content == {"$ref": "#/components/schemas/OpenAIErrorResponse"}
                        continue
                    assert content in (error_ref, {"$ref": "#/components/schemas/BusyErrorBody"})
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "conv_id":
                    assert parameter["schema"]["pattern"] == CONV_ID_PATTERN.pattern, path
            if "{conv_id}" in path:
                assert {"404", "422"} <= set(operation["responses"]), (method, path)
    runs = document["paths"]["/chat"]["post"]["responses"]
    assert set(runs) == {"200", "202", "400", "401", "403", "404", "409", "413", "422", "429"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
