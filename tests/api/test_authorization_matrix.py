"""Authorization matrix: every RPC the servicer implements (the list is read from the servicer, not
written here) × {own app, another user's app, a revoked key, a key limited to another app, no
key}, over gRPC and REST; then blobs, signed links and the web pages. Allowed exactly where it
should be, and a refused call changes nothing in the app it aimed at.

Run: `.venv/bin/pytest tests/api/test_authorization_matrix.py -q`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import descriptor as proto_descriptor
from google.protobuf import message_factory

from api.helpers import assert_ok, image_input, png, text_input
from conftest import Account, Api, Server, create_app, make_stub
from modelmill.api.rest import _routes
from modelmill.api.servicer import implemented_methods
from modelmill.web import PAGES

OWNER, STRANGER = "alice", "mallory"
TARGET = "target"
PAGES_APP = "pages"  # the same content, for the web pages (the owner's matrix calls delete some)
# What the filled-in requests name: all of it exists in the target app, so a call that should
# be refused but is not would read, change or delete something real.
RESOURCE_IDS = {
    "model_id": "m",
    "input_id": "i",
    "dataset_id": "d",
    "concept_id": "c",
    "dataset_version_id": "dv",
    "model_type_id": "embedding-classifier",
    "workflow_id": "w",
    # Nothing of these exists: the call is refused (or not) before it is looked up.
    "version_id": "none",
    "model_version_id": "none",
    "evaluation_id": "none",
    "inputs_add_job_id": "none",
    "annotation_id": "none",
    "id": "none",
}
REPEATED_IDS = {"ids": ["i"], "input_ids": ["i"], "model_ids": ["m"], "dataset_ids": ["d"]}
INTRUDER = "intruder"  # the id of anything a refused call would create
# These answer the server's model-type registry, the same for every valid key: no app's data.
REGISTRY_RPCS = {"ListModelTypes", "GetModelType"}
REFUSED_WITHOUT_KEY = codes.CONN_KEY_INVALID
REFUSED_FOR_SCOPE = codes.CONN_INSUFFICIENT_SCOPES
SCENARIOS = ["own app", "another user's app", "revoked key", "key limited to another app", "no key"]
RPCS = sorted(implemented_methods())


@dataclass(frozen=True)
class Keys:
    owner: str
    stranger: str
    revoked: str
    limited: str  # the owner's key for another of the owner's apps only


@pytest.fixture(scope="module")
def keys(server: Server) -> Keys:
    owner = Account(OWNER, server.token(OWNER))
    create_app(server, owner, TARGET)
    other_app = create_app(server, owner)
    revoked = server.token(OWNER)
    server.revoke(revoked)
    stranger = Account(STRANGER, server.token(STRANGER))
    create_app(server, stranger)
    keys = Keys(owner.key, stranger.key, revoked, server.token(OWNER, other_app))
    for app_id in (TARGET, PAGES_APP):
        if app_id != TARGET:
            create_app(server, owner, app_id)
        fill_app(Api(server, "grpc", owner.key, OWNER, app_id))
    return keys


def fill_app(api: Api) -> None:
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id="d")]))
    labelled = text_input("i", "a labelled text", concepts=["c"])
    labelled.dataset_ids.append("d")
    assert_ok(api.PostInputs(inputs=[labelled, image_input("picture", png(8, 8))]))
    assert_ok(
        api.PostDatasetVersions(dataset_id="d", dataset_versions=[pb.DatasetVersion(id="dv")])
    )
    assert_ok(
        api.PostModels(
            models=[pb.Model(id="m", model_type_id="embedding-classifier")],
        )
    )
    embed = pb.WorkflowNode(id="embed", model=pb.Model(id="all-minilm-l6-v2"))
    assert_ok(api.PostWorkflows(workflows=[pb.Workflow(id="w", nodes=[embed])]))


def snapshot(server: Server, key: str) -> dict[str, list[str]]:
    """What the target app holds, read with the owner's key."""
    api = Api(server, "grpc", key, OWNER, TARGET)
    return {
        "inputs": sorted(i.id for i in assert_ok(api.ListInputs(per_page=100)).inputs),
        "concepts": sorted(c.id for c in assert_ok(api.ListConcepts(per_page=100)).concepts),
        "datasets": sorted(d.id for d in assert_ok(api.ListDatasets(per_page=100)).datasets),
        "models": sorted(m.id for m in assert_ok(api.ListModels(per_page=100)).models),
        "annotations": sorted(
            a.id for a in assert_ok(api.ListAnnotations(per_page=100)).annotations
        ),
        "workflows": sorted(w.id for w in assert_ok(api.ListWorkflows(per_page=100)).workflows),
        "versions": sorted(
            v.id
            for v in assert_ok(
                api.ListDatasetVersions(dataset_id="d", per_page=100)
            ).dataset_versions
        ),
    }


def request_for(rpc: str) -> Any:
    """A request naming the target app's resources, with one item in each list of messages."""
    descriptor = service_pb2._V2.methods_by_name[rpc].input_type
    request = message_factory.GetMessageClass(descriptor)()
    request.user_app_id.user_id, request.user_app_id.app_id = OWNER, TARGET
    for field in descriptor.fields:
        if (
            field.name in RESOURCE_IDS
            and field.type == proto_descriptor.FieldDescriptor.TYPE_STRING
        ):
            setattr(request, field.name, RESOURCE_IDS[field.name])
        elif field.name in REPEATED_IDS and field.label == field.LABEL_REPEATED:
            getattr(request, field.name).extend(REPEATED_IDS[field.name])
        elif (
            field.label == field.LABEL_REPEATED
            and field.type == proto_descriptor.FieldDescriptor.TYPE_MESSAGE
            and "id" in field.message_type.fields_by_name
        ):
            item = getattr(request, field.name).add()
            item.id = INTRUDER
    return request


def key_of(scenario: str, keys: Keys) -> str | None:
    return {
        "own app": keys.owner,
        "another user's app": keys.stranger,
        "revoked key": keys.revoked,
        "key limited to another app": keys.limited,
        "no key": None,
    }[scenario]


def expected_refusal(rpc: str, scenario: str) -> int | None:
    """The code a call must be refused with, or None where it must be let through."""
    if scenario in ("revoked key", "no key"):
        return REFUSED_WITHOUT_KEY
    if scenario == "own app" or rpc in REGISTRY_RPCS:
        return None
    if rpc in ("ListApps", "GetUser") and scenario == "key limited to another app":
        return None  # the key's own user: allowed (ListApps lists only the key's app, below)
    return REFUSED_FOR_SCOPE


_stubs: dict[tuple[int, str], Any] = {}


def call(server: Server, transport: str, key: str | None, rpc: str) -> Any:
    """The RPC over gRPC or REST (the official client's JSON channel). The JSON channel will not
    send a call without a key, so that case goes as raw HTTP to every REST route of the RPC."""
    if transport == "rest" and key is None:
        return call_rest_without_key(server, rpc)
    if (id(server), transport) not in _stubs:
        _stubs[(id(server), transport)] = make_stub(server, transport)
    metadata = (("authorization", f"Key {key}"),) if key else ()
    return getattr(_stubs[(id(server), transport)], rpc)(request_for(rpc), metadata=metadata)


def rest_paths(rpc: str) -> list[tuple[str, str]]:
    """(verb, path) of every REST route of `rpc`, its {variables} filled in."""
    values = {"user_id": OWNER, "app_id": TARGET, **RESOURCE_IDS}
    found = []
    for verb, routes in _routes({rpc}).items():
        for route in routes:
            parts = [
                values.get(segment.rsplit(".", 1)[-1], "x") if variable else segment
                for segment, variable in zip(route.segments, route.variables, strict=True)
            ]
            found.append((verb, "/" + "/".join(parts)))
    return found


def call_rest_without_key(server: Server, rpc: str) -> Any:
    """The first route's answer as the RPC's reply message; every route must refuse alike."""
    replies = []
    for verb, path in rest_paths(rpc):
        body = {} if verb in ("POST", "PATCH", "PUT", "DELETE") else None
        reply = requests.request(verb, server.http_url + path, json=body, timeout=30).json()
        replies.append(reply)
    assert replies, f"{rpc} has no REST route"
    codes_seen = {r["status"]["code"] for r in replies}
    assert len(codes_seen) == 1, (rpc, replies)
    descriptor = service_pb2._V2.methods_by_name[rpc].output_type
    reply_message = message_factory.GetMessageClass(descriptor)()
    reply_message.status.code = codes_seen.pop()
    return reply_message


@pytest.fixture(scope="module")
def refused_phase(server: Server, keys: Keys) -> Iterator[dict[str, Any]]:
    """Every call that must be refused, over both transports, before any allowed call runs (an
    allowed Delete* would otherwise remove what the refused calls aim at)."""
    before = snapshot(server, keys.owner)
    replies = {
        (rpc, scenario, transport): call(server, transport, key_of(scenario, keys), rpc)
        for rpc in RPCS
        for scenario in SCENARIOS
        if scenario != "own app"
        for transport in ("grpc", "rest")
    }
    yield {"before": before, "after": snapshot(server, keys.owner), "replies": replies}


def test_the_matrix_covers_every_implemented_rpc() -> None:
    assert len(RPCS) >= 50, RPCS
    assert {"PostInputs", "DeleteInputs", "PostModelVersions", "PostModelOutputs"} <= set(RPCS)
    assert {"PostWorkflows", "DeleteWorkflows", "PostWorkflowResults"} <= set(RPCS)


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "own app"])
@pytest.mark.parametrize("rpc", RPCS)
def test_refused_exactly_where_it_should_be(
    refused_phase: dict[str, Any], rpc: str, scenario: str
) -> None:
    expected = expected_refusal(rpc, scenario)
    for transport in ("grpc", "rest"):
        reply = refused_phase["replies"][(rpc, scenario, transport)]
        if expected is not None:
            assert reply.status.code == expected, (transport, reply.status)
            continue
        assert reply.status.code not in (REFUSED_WITHOUT_KEY, REFUSED_FOR_SCOPE), (
            transport,
            reply.status,
        )
        if rpc == "ListApps":
            assert TARGET not in [a.id for a in reply.apps], "a limited key listed another app"


def test_refused_calls_changed_nothing(refused_phase: dict[str, Any]) -> None:
    assert refused_phase["after"] == refused_phase["before"]
    assert INTRUDER not in str(refused_phase["after"])


# DeleteApp by the owner would delete the app every later test here uses: the next test deletes
# an app of the owner's made for it instead.
@pytest.mark.parametrize("rpc", [rpc for rpc in RPCS if rpc != "DeleteApp"])
def test_the_owner_is_let_through(
    refused_phase: dict[str, Any], server: Server, keys: Keys, rpc: str
) -> None:
    """The owner's call may fail on the request's content, never on who is asking."""
    for transport in ("grpc", "rest"):
        reply = call(server, transport, keys.owner, rpc)
        assert reply.status.code not in (REFUSED_WITHOUT_KEY, REFUSED_FOR_SCOPE), reply.status
        assert not re.search(r"App '.*' does not exist", reply.status.description), reply.status


def test_the_owner_may_delete_an_app_of_theirs(server: Server, keys: Keys) -> None:
    doomed = create_app(server, Account(OWNER, keys.owner), "doomed")
    api = Api(server, "grpc", keys.owner, OWNER, doomed)
    assert_ok(api.DeleteApp())
    assert api.GetApp().status.code != codes.SUCCESS


# ---- blobs and signed links ----------------------------------------------------------------------


def test_blobs_by_key_and_by_signed_link(server: Server, keys: Keys) -> None:
    maker = server.token(OWNER)
    api = Api(server, "grpc", maker, OWNER, TARGET)
    url = assert_ok(api.GetInput(input_id="picture")).input.data.image.url
    bare = url.split("?")[0]

    def status(target: str, key: str | None) -> int:
        headers = {"Authorization": f"Key {key}"} if key else {}
        return requests.get(target, headers=headers, timeout=10).status_code

    assert status(bare, keys.owner) == 200
    assert status(bare, keys.stranger) == 404
    assert status(bare, keys.limited) == 404
    assert status(bare, keys.revoked) == 401
    assert status(bare, None) == 401
    assert status(url, None) == 200, "a signed link needs no key"
    server.revoke(maker)
    assert status(url, None) == 401, "a signed link outlived the key that made it"


# ---- web pages ----------------------------------------------------------------------------------

PAGE_PARAMETERS = {"app_id": PAGES_APP, "model_id": "m", "dataset_id": "d", "version_id": "none"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def app_pages() -> list[str]:
    """Every GET page of an app, read from the web UI's routers."""
    paths = []
    for route in (route for page in PAGES for route in page.router.routes):
        path = getattr(route, "path", "")
        if "{app_id}" in path and "GET" in getattr(route, "methods", set()):
            paths.append(re.sub(r"\{(\w+)\}", lambda m: PAGE_PARAMETERS[m.group(1)], path))
    return paths


def signed_in(server: Server, key: str | None) -> requests.Session:
    session = requests.Session()
    if key:
        page = session.get(f"{server.http_url}/login", timeout=10).text
        match = CSRF.search(page)
        assert match
        session.post(
            f"{server.http_url}/login",
            data={"token": key, "csrf_token": match.group(1)},
            timeout=10,
            allow_redirects=False,
        )
    return session


def test_web_pages_of_an_app_show_only_to_its_owner(server: Server, keys: Keys) -> None:
    pages = app_pages()
    assert len(pages) >= 8, pages
    owner, stranger, limited, nobody = (
        signed_in(server, key) for key in (keys.owner, keys.stranger, keys.limited, None)
    )
    for path in pages:
        url = server.http_url + path
        own = owner.get(url, timeout=30, allow_redirects=False)
        assert own.status_code in (200, 404), (path, own.status_code)  # 404: version "none"
        if own.status_code == 404:
            assert "version" in own.text.lower(), path
        for session, expected in ((stranger, 404), (limited, 400)):
            refused = session.get(url, timeout=30, allow_redirects=False)
            assert refused.status_code == expected, (path, refused.status_code)
            assert "a labelled text" not in refused.text
        away = nobody.get(url, timeout=30, allow_redirects=False)
        assert away.status_code in (302, 303, 307) and "/login" in away.headers["location"]
