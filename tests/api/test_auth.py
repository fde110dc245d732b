"""Keys and apps: who may call what, over gRPC and REST. Missing, wrong, malformed and revoked
keys; keys of another user; keys limited to one app; PostApps / GetApp / ListApps."""

from __future__ import annotations

import secrets

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, assert_status, input_ids, text_input
from conftest import Account, Api, Http, Server, create_app

# Keys come from the CLI, a process each, so the tests share the few accounts they need.


def fresh_user(server: Server, app: str | None = None) -> Account:
    user_id = f"user-{secrets.token_hex(3)}"
    return Account(user_id, server.token(user_id, app))


@pytest.fixture(scope="module")
def mallory(server: Server) -> Account:
    """Another user, with no business in the owner's apps."""
    return fresh_user(server)


@pytest.fixture(scope="module")
def app_maker(server: Server) -> Account:
    """A user whose apps only the app tests create."""
    return fresh_user(server)


@pytest.fixture(scope="module")
def limited(server: Server, owner: Account) -> tuple[str, str]:
    """(app id, key) of an owner's key limited to that one app."""
    app_id = create_app(server, owner)
    return app_id, server.token(owner.user_id, app_id)


@pytest.fixture(scope="module")
def revoked_key(server: Server, owner: Account) -> str:
    key = server.token(owner.user_id)
    assert Http(server, key, owner.user_id, "").get("/v2/users/me/apps").status_code == 200
    server.revoke(key)
    return key


# ---- keys ------------------------------------------------------------------------------------


def test_missing_key_is_refused_over_grpc(grpc_api: Api) -> None:
    request = service_pb2.ListInputsRequest(user_app_id=grpc_api.user_app_id)

    reply = grpc_api.stub.ListInputs(request, metadata=())

    assert_status(reply, codes.CONN_KEY_INVALID, "No API key", "authorization: Key")


def test_missing_key_is_refused_over_rest(http: Http) -> None:
    reply = http.get("inputs", headers={})

    assert reply.status_code == 401
    assert reply.json()["status"]["code"] == codes.CONN_KEY_INVALID
    assert "authorization: Key" in reply.json()["status"]["details"]


def test_wrong_key_is_refused(api: Api, connect) -> None:  # type: ignore[no-untyped-def]
    intruder = connect("0" * 32, api.user_app_id.user_id, api.app_id)

    reply = intruder.PostInputs(inputs=[text_input("sneaky", "x")])

    assert_status(reply, codes.CONN_KEY_INVALID, "not valid")
    assert input_ids(api) == []


@pytest.mark.parametrize(
    "value", ["Bearer abc", "Key", "abc"], ids=["bearer", "no-token", "no-scheme"]
)
def test_malformed_authorization_is_refused(grpc_api: Api, value: str) -> None:
    request = service_pb2.ListInputsRequest(user_app_id=grpc_api.user_app_id)

    reply = grpc_api.stub.ListInputs(request, metadata=(("authorization", value),))

    assert_status(reply, codes.CONN_KEY_INVALID, "Key <PAT>")


def test_revoked_key_is_refused(api: Api, connect, revoked_key: str) -> None:  # type: ignore[no-untyped-def]
    client = connect(revoked_key, api.user_app_id.user_id, api.app_id)

    assert_status(client.ListInputs(), codes.CONN_KEY_INVALID, "revoked")
    assert_status(
        client.PostInputs(inputs=[text_input("late", "x")]), codes.CONN_KEY_INVALID, "revoked"
    )
    assert input_ids(api) == []


def test_revoking_an_unknown_key_fails(server: Server) -> None:
    result = server.cli("token", "revoke", "f" * 32)

    assert result.returncode == 1
    assert "No such key" in result.stdout


def test_token_create_prints_the_key_as_the_last_line(server: Server) -> None:
    result = server.cli("token", "create", "--user", "printer")

    assert result.returncode == 0
    key = result.stdout.strip().splitlines()[-1]
    assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)


# ---- users and apps --------------------------------------------------------------------------


def test_key_of_another_user_cannot_use_this_users_app(api: Api, connect, mallory: Account) -> None:  # type: ignore[no-untyped-def]
    assert_ok(api.PostInputs(inputs=[text_input("private", "secret")]))
    as_owner = connect(mallory.key, api.user_app_id.user_id, api.app_id)
    as_self = connect(mallory.key, "me", api.app_id)

    assert_status(
        as_owner.ListInputs(),
        codes.CONN_INSUFFICIENT_SCOPES,
        mallory.user_id,
        api.user_app_id.user_id,
    )
    assert_status(as_owner.DeleteInputs(ids=["private"]), codes.CONN_INSUFFICIENT_SCOPES)
    # Under its own user the app id names nothing: other users' apps are not visible.
    assert_status(as_self.ListInputs(), codes.CONN_DOES_NOT_EXIST, api.app_id)
    assert input_ids(api) == ["private"]


def test_key_limited_to_one_app_cannot_use_another(
    api: Api, connect, limited: tuple[str, str]
) -> None:  # type: ignore[no-untyped-def]
    limited_app, key = limited
    on_its_app = connect(key, "me", limited_app)
    on_other_app = connect(key, "me", api.app_id)

    assert_ok(on_its_app.ListInputs())
    reply = on_other_app.PostInputs(inputs=[text_input("theirs", "x")])

    assert_status(reply, codes.CONN_INSUFFICIENT_SCOPES, limited_app, api.app_id)
    assert input_ids(api) == []
    assert [a.id for a in assert_ok(on_its_app.ListApps()).apps] == [limited_app]
    assert_status(
        on_its_app.PostApps(apps=[pb.App(id="more")]), codes.CONN_INSUFFICIENT_SCOPES, "limited"
    )


def test_token_create_with_app_makes_the_app(server: Server) -> None:
    account = fresh_user(server, app="made-by-cli")

    reply = Http(server, account.key, account.user_id, "made-by-cli").get(
        "/v2/users/me/apps/made-by-cli"
    )

    assert reply.json()["app"]["id"] == "made-by-cli"


def test_post_apps_then_get_and_list_them(app_maker: Account, connect) -> None:  # type: ignore[no-untyped-def]
    client = connect(app_maker.key, app_maker.user_id)
    first, second = f"first-{secrets.token_hex(3)}", f"second-{secrets.token_hex(3)}"

    created = client.PostApps(
        apps=[pb.App(id=first, name="First app", description="d"), pb.App(id=second)]
    )

    assert [(a.id, a.name) for a in assert_ok(created).apps] == [
        (first, "First app"),
        (second, second),
    ]
    got = assert_ok(connect(app_maker.key, "me", first).GetApp()).app
    assert (got.id, got.name, got.description, got.user_id) == (
        first,
        "First app",
        "d",
        app_maker.user_id,
    )
    listed = [a.id for a in assert_ok(client.ListApps(per_page=1000)).apps]
    assert listed[-2:] == [first, second]  # oldest first
    assert [a.id for a in assert_ok(client.ListApps(page=len(listed), per_page=1)).apps] == [second]
    assert list(assert_ok(client.ListApps(page=len(listed) + 1, per_page=1)).apps) == []


def test_post_apps_with_taken_or_bad_ids_creates_none(app_maker: Account, connect) -> None:  # type: ignore[no-untyped-def]
    client = connect(app_maker.key, app_maker.user_id)
    taken_id, new_id = f"taken-{secrets.token_hex(3)}", f"new-{secrets.token_hex(3)}"
    assert_ok(client.PostApps(apps=[pb.App(id=taken_id)]))
    before = [a.id for a in assert_ok(client.ListApps(per_page=1000)).apps]

    taken = client.PostApps(apps=[pb.App(id=new_id), pb.App(id=taken_id)])
    repeated = client.PostApps(apps=[pb.App(id=new_id), pb.App(id=new_id)])
    bad = client.PostApps(apps=[pb.App(id=new_id), pb.App(id="bad app")])

    assert_status(taken, codes.CONN_INVALID_REQUEST, taken_id)
    assert_status(repeated, codes.CONN_INVALID_REQUEST, "repeated")
    assert_status(bad, codes.CONN_INVALID_REQUEST, "bad app")
    assert [a.id for a in assert_ok(client.ListApps(per_page=1000)).apps] == before


def test_apps_of_another_user_cannot_be_listed_or_created(
    api: Api, connect, mallory: Account
) -> None:  # type: ignore[no-untyped-def]
    client = connect(mallory.key, api.user_app_id.user_id)

    assert_status(client.ListApps(), codes.CONN_INSUFFICIENT_SCOPES, mallory.user_id)
    assert_status(client.PostApps(apps=[pb.App(id="planted")]), codes.CONN_INSUFFICIENT_SCOPES)


def test_unknown_app_is_reported_missing(api: Api, connect) -> None:  # type: ignore[no-untyped-def]
    client = connect(api.key, api.user_app_id.user_id, "no-such-app")

    assert_status(client.GetApp(), codes.CONN_DOES_NOT_EXIST, "no-such-app")
    assert_status(client.ListConcepts(), codes.CONN_DOES_NOT_EXIST, "no-such-app")
    assert_status(client.ListModels(), codes.CONN_DOES_NOT_EXIST, "no-such-app")
    assert_status(client.ListDatasets(), codes.CONN_DOES_NOT_EXIST, "no-such-app")


def test_me_names_the_keys_own_user(api: Api, connect) -> None:  # type: ignore[no-untyped-def]
    assert_ok(api.PostInputs(inputs=[text_input("hello", "x")]))

    client = connect(api.key, "me", api.app_id)

    assert [i.id for i in assert_ok(client.ListInputs()).inputs] == ["hello"]
