"""Fuzzing the REST bodies of the data and training calls (a short run; `bench/fuzz.py` runs the
long one): random types, huge and negative numbers, NaN, deep nesting, bad base64, bad boxes and
unknown values never get a 5xx or INTERNAL_SERVER_ISSUE, and never leave half a call behind.

Run: `.venv/bin/pytest tests/api/test_fuzz_rest.py -q`.
"""

from __future__ import annotations

from typing import Any

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from hypothesis import HealthCheck, given, settings

from api.fuzz_bodies import (
    HTTP_SERVER_ERROR,
    USER,
    Deep,
    FuzzedApp,
    calls,
    check_answer,
    send,
)
from conftest import Account, Server, create_app

SHORT_RUN_EXAMPLES = 40


@pytest.fixture(scope="module")
def fuzzed_app(server: Server) -> FuzzedApp:
    account = Account(USER, server.token(USER))
    app = FuzzedApp(server.http_url, account.key, create_app(server, account))
    app.prepare()
    return app


@settings(
    max_examples=SHORT_RUN_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,  # the same cases every run: CI must not flake on what an old run found
    derandomize=True,
)
@given(call=calls)
def test_fuzzed_rest_bodies_get_a_status_and_leave_nothing_half_written(
    fuzzed_app: FuzzedApp, call: tuple[str, Any]
) -> None:
    rpc, body = call
    check_answer(fuzzed_app, rpc, body)


@pytest.mark.parametrize("depth", [900, 5000])
def test_a_deeply_nested_body_is_a_bad_request(fuzzed_app: FuzzedApp, depth: int) -> None:
    """Found by the fuzzer: nesting near or past Python's recursion limit answered 500."""
    reply = send(fuzzed_app, "PostInputs", {"inputs": Deep(depth)})

    assert reply.status_code < HTTP_SERVER_ERROR
    assert reply.json()["status"]["code"] == codes.CONN_BAD_REQUEST_FORMAT
