"""Who reads a blob: a signed link until it expires or the key that made it is revoked; with a
key, only a caller whose apps reference the blob (content hashes are not secrets)."""

from __future__ import annotations

import time

import pytest
import requests
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, image_input, png
from conftest import Account, Api, Server, create_app

TTL_S = 2


def image_url(api: Api, input_id: str = "picture") -> str:
    assert_ok(api.PostInputs(inputs=[image_input(input_id, png(12, 10))]))
    return str(assert_ok(api.GetInput(input_id=input_id)).input.data.image.url)


def fetch(url: str, key: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Key {key}"} if key else {}
    return requests.get(url, headers=headers, timeout=10)


def test_a_key_reads_only_blobs_its_apps_reference(server: Server, api: Api) -> None:
    bare = image_url(api).split("?")[0]
    stranger = Account("mallory", server.token("mallory"))
    create_app(server, stranger)
    owner = Account(api.user_app_id.user_id, api.key)
    other_app_only = server.token(owner.user_id, create_app(server, owner))

    assert fetch(bare, api.key).status_code == 200
    refused = fetch(bare, stranger.key)
    assert refused.status_code == 404, "another user read the blob by its hash"
    assert refused.json()["status"]["code"] == codes.CONN_DOES_NOT_EXIST
    assert fetch(bare, other_app_only).status_code == 404, "a key limited to another app read it"
    assert fetch(bare.rsplit("/", 1)[0] + "/" + "0" * 64, api.key).status_code == 404


def test_a_signed_link_dies_with_the_key_that_made_it(server: Server, api: Api) -> None:
    key = server.token(api.user_app_id.user_id)
    maker = Api(server, api.transport, key, api.user_app_id.user_id, api.app_id)
    url = image_url(maker)
    other_url = image_url(api, "kept")
    assert fetch(url).status_code == 200

    server.revoke(key)

    dead = fetch(url)
    assert dead.status_code == 401 and "revoked" in dead.json()["status"]["description"]
    assert fetch(other_url).status_code == 200, "links of other keys died too"


def test_a_tampered_expiry_is_refused(api: Api) -> None:
    url = image_url(api)
    later = url.replace("&exp=", "&exp=9")

    assert fetch(later).status_code == 401


@pytest.fixture(scope="module")
def short_links(start_server) -> Server:  # type: ignore[no-untyped-def]
    return start_server({"MODELMILL_LINK_TTL_S": str(TTL_S)})


def test_signed_links_expire_after_the_setting(short_links: Server) -> None:
    owner = Account("alice", short_links.token("alice"))
    api = Api(short_links, "rest", owner.key, owner.user_id, create_app(short_links, owner))
    url = image_url(api)
    assert fetch(url).status_code == 200

    time.sleep(TTL_S + 1)

    expired = fetch(url)
    assert expired.status_code == 401 and "expired" in expired.json()["status"]["description"]
    assert fetch(url, owner.key).status_code == 200, "the owner's key still reads it"
