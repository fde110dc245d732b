"""A server whose blobs live in S3 (moto's server on loopback): inputs land in the bucket, not the
data dir; blob links are streamed by the server, with byte ranges, or point at the store's own
presigned URLs when clients can reach it (MODELMILL_BLOB_DIRECT_LINKS)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
import requests

from api.helpers import assert_ok, image_input, jpeg
from conftest import OWNER, Account, Api, MotoServer, Server, create_app

pytestmark = pytest.mark.s3


def client_of(server: Server) -> Api:
    account = Account(OWNER, server.token(OWNER))
    return Api(server, "grpc", account.key, OWNER, create_app(server, account))


@pytest.fixture(scope="module")
def bucket(s3_server: MotoServer) -> str:
    return s3_server.create_bucket()


@pytest.fixture(scope="module")
def streamed(start_server: Any, s3_server: MotoServer, bucket: str) -> Api:
    return client_of(start_server(s3_server.settings(bucket)))


@pytest.fixture(scope="module")
def direct(start_server: Any, s3_server: MotoServer, bucket: str) -> Api:
    settings = {**s3_server.settings(bucket), "MODELMILL_BLOB_DIRECT_LINKS": "true"}
    return client_of(start_server(settings))


def post_image(api: Api) -> tuple[bytes, str]:
    # Random bytes after a valid JPEG: the image decodes, and every test's blob is its own.

    content = jpeg(64, 48) + os.urandom(2000)
    input_id = f"picture-{hashlib.sha256(content).hexdigest()[:8]}"
    assert_ok(api.PostInputs(inputs=[image_input(input_id, content)]))
    return content, assert_ok(api.GetInput(input_id=input_id)).input.data.image.url


def test_inputs_land_in_the_bucket_not_in_the_data_dir(
    streamed: Api, s3_server: MotoServer, bucket: str
) -> None:
    content, _ = post_image(streamed)
    key = hashlib.sha256(content).hexdigest()

    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="blobs/")
    assert f"blobs/{key[:2]}/{key[2:]}" in [item["Key"] for item in listed["Contents"]]
    local = streamed.server.data_dir / "blobs"
    assert not local.exists() or not [p for p in local.rglob("*") if p.is_file()]


def test_the_server_streams_blobs_and_their_ranges(streamed: Api) -> None:
    content, url = post_image(streamed)

    assert url.startswith(f"{streamed.server.http_url}/blobs/")
    whole = requests.get(url, timeout=10)
    assert whole.status_code == 200 and whole.content == content
    assert whole.headers["Accept-Ranges"] == "bytes"
    middle = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert middle.status_code == 206 and middle.content == content[10:20]
    assert middle.headers["Content-Range"] == f"bytes 10-19/{len(content)}"
    tail = requests.get(url, headers={"Range": "bytes=-5"}, timeout=10)
    assert tail.status_code == 206 and tail.content == content[-5:]
    rest = requests.get(url, headers={"Range": "bytes=100-"}, timeout=10)
    assert rest.status_code == 206 and rest.content == content[100:]


def test_a_range_past_the_end_is_refused_with_the_size(streamed: Api) -> None:
    content, url = post_image(streamed)

    reply = requests.get(url, headers={"Range": f"bytes={len(content)}-"}, timeout=10)

    assert reply.status_code == 416
    assert reply.headers["Content-Range"] == f"bytes */{len(content)}"


def test_a_missing_blob_is_not_found(streamed: Api) -> None:
    reply = requests.get(
        f"{streamed.server.http_url}/blobs/{'0' * 64}",
        headers={"Authorization": f"Key {streamed.key}"},
        timeout=10,
    )

    assert reply.status_code == 404


def test_direct_links_are_the_stores_presigned_urls(direct: Api, s3_server: MotoServer) -> None:
    content, url = post_image(direct)

    assert url.startswith(s3_server.endpoint + "/") and "X-Amz-Signature=" in url
    fetched = requests.get(url, timeout=10)  # no key, no modelmill server involved
    assert fetched.status_code == 200 and fetched.content == content
