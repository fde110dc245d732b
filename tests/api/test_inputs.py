"""Inputs over gRPC and REST: storing images and texts with labels, reading, counting, deleting,
and every kind of bad input getting its own status with nothing half-written."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import requests
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from clarifai_grpc.grpc.api.status import status_pb2

from api.helpers import (
    assert_ok,
    assert_status,
    bomb_png,
    box,
    image_bytes,
    image_input,
    input_count,
    input_ids,
    jpeg,
    png,
    text_input,
    truncated_jpeg,
)
from conftest import Account, Api, Http, Server, create_app

# ---- storing and reading -------------------------------------------------------------------------


def test_post_image_and_text_inputs_then_get_them_back(api: Api) -> None:
    reply = api.PostInputs(
        inputs=[
            image_input("cat-1", jpeg(40, 30), concepts=["cat"]),
            text_input("review-1", "the food was great", concepts=["positive"]),
        ]
    )
    assert_ok(reply)
    assert [i.id for i in reply.inputs] == ["cat-1", "review-1"]
    assert all(i.status.code == codes.INPUT_DOWNLOAD_SUCCESS for i in reply.inputs)

    image = assert_ok(api.GetInput(input_id="cat-1")).input
    assert (image.data.image.image_info.width, image.data.image.image_info.height) == (40, 30)
    assert image.data.image.image_info.format == "JPEG"
    assert [(c.id, c.value) for c in image.data.concepts] == [("cat", 1.0)]

    text = assert_ok(api.GetInput(input_id="review-1")).input
    assert text.data.text.raw == "the food was great"
    assert [(c.id, c.value) for c in text.data.concepts] == [("positive", 1.0)]


def test_post_inputs_keeps_metadata(api: Api) -> None:
    message = text_input("with-metadata", "hello")
    message.data.metadata.update({"source": "camera-3", "shot": 7})
    assert_ok(api.PostInputs(inputs=[message]))

    stored = assert_ok(api.GetInput(input_id="with-metadata")).input
    assert dict(stored.data.metadata) == {"source": "camera-3", "shot": 7.0}


def test_negative_concept_label_stays_negative(api: Api) -> None:
    negative = pb.Concept(id="dog", value=0.0)
    assert_ok(api.PostInputs(inputs=[image_input("not-a-dog", concepts=["cat", negative])]))

    stored = assert_ok(api.GetInput(input_id="not-a-dog")).input
    assert sorted((c.id, c.value) for c in stored.data.concepts) == [("cat", 1.0), ("dog", 0.0)]
    listed = assert_ok(api.ListInputs()).inputs[0]
    assert sorted((c.id, c.value) for c in listed.data.concepts) == [("cat", 1.0), ("dog", 0.0)]


def test_post_inputs_without_ids_gets_generated_ids(api: Api) -> None:
    reply = assert_ok(api.PostInputs(inputs=[text_input(text="one"), text_input(text="two")]))

    ids = [i.id for i in reply.inputs]
    assert all(len(i) == 32 for i in ids) and len(set(ids)) == 2
    assert sorted(input_ids(api)) == sorted(ids)


def test_image_inputs_carry_a_url_that_serves_the_bytes(api: Api) -> None:
    content = png(12, 10)
    assert_ok(api.PostInputs(inputs=[image_input("picture", content)]))
    url = assert_ok(api.GetInput(input_id="picture")).input.data.image.url

    downloaded = requests.get(url, timeout=10)

    assert downloaded.status_code == 200 and downloaded.content == content


def test_blob_urls_without_a_valid_signature_need_a_key(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[image_input("picture", png(12, 10))]))
    url = assert_ok(api.GetInput(input_id="picture")).input.data.image.url
    bare = url.split("?")[0]

    assert requests.get(bare, timeout=10).status_code == 401
    assert requests.get(bare + "?sig=" + "0" * 32, timeout=10).status_code == 401
    with_key = requests.get(bare, headers={"Authorization": f"Key {api.key}"}, timeout=10)
    assert with_key.status_code == 200


def test_image_regions_are_stored_with_the_input(api: Api) -> None:
    message = image_input("boxed")
    message.data.regions.append(box(0.1, 0.2, 0.5, 0.6, "cat"))
    assert_ok(api.PostInputs(inputs=[message]))

    region = assert_ok(api.GetInput(input_id="boxed")).input.data.regions[0]
    found = region.region_info.bounding_box
    assert [
        round(v, 4) for v in (found.top_row, found.left_col, found.bottom_row, found.right_col)
    ] == [0.1, 0.2, 0.5, 0.6]
    assert [c.id for c in region.data.concepts] == ["cat"]


def test_list_inputs_newest_first_and_filtered_by_ids_and_status(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input(f"t{i}", f"text {i}") for i in range(5)]))

    assert input_ids(api) == ["t4", "t3", "t2", "t1", "t0"]
    chosen = api.ListInputs(
        ids=["t1", "t3", "missing"],
        status=status_pb2.Status(code=codes.INPUT_DOWNLOAD_SUCCESS),
        per_page=2,
    )
    assert sorted(i.id for i in assert_ok(chosen).inputs) == ["t1", "t3"]


def test_get_input_count_counts_stored_inputs(api: Api) -> None:
    assert input_count(api) == 0
    assert_ok(api.PostInputs(inputs=[text_input(text="a"), image_input()]))

    counts = assert_ok(api.GetInputCount()).counts
    assert (counts.processed, counts.errors) == (2, 0)


def test_inputs_add_job_reports_done_with_success_and_failure_counts(api: Api) -> None:
    reply = api.PostInputs(
        inputs=[text_input("good", "fine"), text_input("bad", "   ")], inputs_add_job_id="job-1"
    )
    assert reply.status.code == codes.MIXED_STATUS
    assert reply.inputs_add_job.id == "job-1"

    job = assert_ok(api.GetInputsAddJob(id="job-1")).inputs_add_job
    assert (job.progress.pending_count, job.progress.in_progress_count) == (0, 0)
    assert (job.progress.success_count, job.progress.failed_count) == (1, 1)


def test_unknown_inputs_add_job_is_reported_missing(api: Api) -> None:
    assert_status(api.GetInputsAddJob(id="no-such-job"), codes.CONN_DOES_NOT_EXIST, "no-such-job")


def test_delete_inputs_removes_exactly_the_named_ones(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input(i, i) for i in ("a", "b", "c")]))

    assert_ok(api.DeleteInputs(ids=["a", "c"]))

    assert input_ids(api) == ["b"]
    assert_status(api.GetInput(input_id="a"), codes.INPUT_DOES_NOT_EXIST, "'a'")


def test_delete_input_removes_one(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input(i, i) for i in ("a", "b")]))

    assert_ok(api.DeleteInput(input_id="a"))

    assert input_ids(api) == ["b"]


def test_delete_inputs_with_a_missing_id_deletes_nothing(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input(i, i) for i in ("a", "b")]))

    reply = api.DeleteInputs(ids=["a", "ghost"])

    assert_status(reply, codes.INPUT_DOES_NOT_EXIST, "ghost", "nothing was deleted")
    assert sorted(input_ids(api)) == ["a", "b"]


def test_deleted_input_id_can_be_used_again(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input("again", "first")]))
    assert_ok(api.DeleteInputs(ids=["again"]))

    assert_ok(api.PostInputs(inputs=[text_input("again", "second")]))

    assert assert_ok(api.GetInput(input_id="again")).input.data.text.raw == "second"


# ---- bad input: each gets its own status, the good ones are stored ------------------------------


def test_post_inputs_stores_good_and_reports_bad(api: Api) -> None:
    """A batch of 128 with 3 bad inputs stores exactly the 125 good ones (MIXED_STATUS)."""
    bad = {
        17: (image_input("bad-17", b"this is no image"), codes.INPUT_UNSUPPORTED_FORMAT),
        64: (text_input("bad-64", ""), codes.INPUT_INVALID_ARGUMENT),
        100: (image_input("bad-100", truncated_jpeg()), codes.INPUT_UNSUPPORTED_FORMAT),
    }
    batch = [
        bad[i][0] if i in bad else image_input(f"img-{i}", jpeg(8, 8, (i, i, i)), concepts=["grey"])
        for i in range(128)
    ]

    reply = api.PostInputs(inputs=batch)

    assert_status(reply, codes.MIXED_STATUS, "125 of 128")
    for i, answer in enumerate(reply.inputs):
        if i in bad:
            assert answer.id == f"bad-{i}"
            assert_status(answer.status, bad[i][1])
        else:
            assert answer.status.code == codes.INPUT_DOWNLOAD_SUCCESS, answer.status
    stored = input_ids(api)
    assert len(stored) == 125
    assert not {f"bad-{i}" for i in bad} & set(stored)
    assert input_count(api) == 125


def test_a_batch_where_every_input_fails_the_same_way_answers_that_code(api: Api) -> None:
    reply = api.PostInputs(inputs=[text_input("a", " "), text_input("b", "")])

    assert_status(reply, codes.INPUT_INVALID_ARGUMENT, "empty")
    assert input_ids(api) == []


def test_bytes_that_are_no_image_are_rejected(api: Api) -> None:
    reply = api.PostInputs(inputs=[image_input("junk", b"\x00\x01 definitely not pixels")])

    assert_status(reply.inputs[0].status, codes.INPUT_UNSUPPORTED_FORMAT, "not an image")
    assert input_ids(api) == []


def test_truncated_jpeg_is_rejected_as_corrupt(api: Api) -> None:
    reply = api.PostInputs(inputs=[image_input("cut", truncated_jpeg())])

    assert_status(reply.inputs[0].status, codes.INPUT_UNSUPPORTED_FORMAT, "truncated")
    assert input_ids(api) == []


@pytest.mark.parametrize("side", [10_000, 20_000], ids=["100M-pixels", "400M-pixels"])
def test_decompression_bomb_is_rejected_before_decoding(api: Api, side: int) -> None:
    bomb = bomb_png(side, side)
    assert len(bomb) < 100_000  # tiny file, gigabytes once decoded

    reply = api.PostInputs(inputs=[image_input("bomb", bomb), text_input("fine", "fine")])

    assert reply.status.code == codes.MIXED_STATUS
    assert_status(reply.inputs[0].status, codes.INPUT_OVER_LIMIT, "pixels")
    assert input_ids(api) == ["fine"]


def test_grpc_image_sent_as_base64_text_is_explained(grpc_api: Api) -> None:
    """Over gRPC `base64` is a bytes field: sending base64 *text* there is a common mistake."""
    as_text = base64.b64encode(jpeg())

    reply = grpc_api.PostInputs(inputs=[image_input("b64", as_text)])

    assert_status(reply.inputs[0].status, codes.INPUT_UNSUPPORTED_FORMAT, "base64")
    assert input_ids(grpc_api) == []


@pytest.mark.parametrize("bad", ["not base64!!", "@@@@", "QUJD$", "abcde"])
def test_rest_image_with_invalid_base64_is_refused_and_nothing_is_stored(
    http: Http, bad: str
) -> None:
    """Over REST bytes travel as base64 strings; a broken one makes the body unreadable."""
    body = {
        "inputs": [
            {"id": "fine", "data": {"text": {"raw": "fine"}}},
            {"id": "broken", "data": {"image": {"base64": bad}}},
        ]
    }

    reply = http.post("inputs", json=body)

    assert reply.status_code == 400
    status = reply.json()["status"]
    assert status["code"] == codes.CONN_BAD_REQUEST_FORMAT
    assert "inputs[1].data.image.base64 is not valid base64" in status["description"]
    assert http.get("inputs").json()["inputs"] == []


def test_empty_text_is_rejected(api: Api) -> None:
    reply = api.PostInputs(inputs=[text_input("blank", "   \n"), text_input("ok", "ok")])

    assert_status(reply.inputs[0].status, codes.INPUT_INVALID_ARGUMENT, "empty")
    assert input_ids(api) == ["ok"]


def test_oversized_text_is_rejected(api: Api) -> None:
    reply = api.PostInputs(inputs=[text_input("huge", "x" * 100_001)])

    assert_status(reply.inputs[0].status, codes.INPUT_OVER_LIMIT, "100001", "100000")
    assert input_ids(api) == []


def test_input_without_content_is_rejected(api: Api) -> None:
    reply = api.PostInputs(inputs=[pb.Input(id="nothing")])

    assert_status(reply.inputs[0].status, codes.INPUT_INVALID_ARGUMENT, "no content")
    assert input_ids(api) == []


def test_video_inputs_are_not_supported(api: Api) -> None:
    video = pb.Input(id="clip", data=pb.Data(video=pb.Video(base64=b"\x00\x00\x00\x18ftypmp42")))

    reply = api.PostInputs(inputs=[video])

    assert_status(reply.inputs[0].status, codes.INPUT_UNSUPPORTED_FORMAT, "video")
    assert input_ids(api) == []


def test_url_inputs_are_refused_unless_the_server_allows_them(api: Api) -> None:
    message = pb.Input(id="remote", data=pb.Data(image=pb.Image(url="http://127.0.0.1:9/cat.jpg")))

    reply = api.PostInputs(inputs=[message])

    assert_status(reply.inputs[0].status, codes.INPUT_INVALID_URL, "MODELMILL_ALLOW_URL_INPUTS")
    assert input_ids(api) == []


def test_duplicate_ids_in_one_batch_store_the_first_only(api: Api) -> None:
    reply = api.PostInputs(inputs=[text_input("twin", "first"), text_input("twin", "second")])

    assert reply.status.code == codes.MIXED_STATUS
    assert reply.inputs[0].status.code == codes.INPUT_DOWNLOAD_SUCCESS
    assert_status(reply.inputs[1].status, codes.INPUT_DUPLICATE, "twin", "twice")
    assert assert_ok(api.GetInput(input_id="twin")).input.data.text.raw == "first"


def test_duplicate_id_of_a_stored_input_is_rejected_and_keeps_the_old_one(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input("kept", "old")]))

    reply = api.PostInputs(inputs=[text_input("kept", "new"), text_input("other", "other")])

    assert reply.status.code == codes.MIXED_STATUS
    assert_status(reply.inputs[0].status, codes.INPUT_DUPLICATE, "kept", "already exists")
    assert assert_ok(api.GetInput(input_id="kept")).input.data.text.raw == "old"
    assert sorted(input_ids(api)) == ["kept", "other"]


@pytest.mark.parametrize(
    ("bad_id", "words"),
    [
        ("has space", ("characters",)),
        ("slash/inside", ("characters",)),
        ("-leading-dash", ("starting with",)),
        ("x" * 256, ("256", "255")),
    ],
    ids=["space", "slash", "leading-dash", "too-long"],
)
def test_input_ids_with_bad_characters_or_length_are_rejected(
    api: Api, bad_id: str, words: tuple[str, ...]
) -> None:
    reply = api.PostInputs(inputs=[text_input(bad_id, "text"), text_input("good-id", "text")])

    assert reply.status.code == codes.MIXED_STATUS
    assert_status(reply.inputs[0].status, codes.INPUT_INVALID_ARGUMENT, *words)
    assert input_ids(api) == ["good-id"]


def test_concept_label_must_be_one_or_zero(api: Api) -> None:
    reply = api.PostInputs(
        inputs=[text_input("half", "text", concepts=[pb.Concept(id="maybe", value=0.5)])]
    )

    assert_status(reply.inputs[0].status, codes.INPUT_INVALID_ARGUMENT, "0.5", "1 (present) or 0")
    assert input_ids(api) == []
    assert list(assert_ok(api.ListConcepts()).concepts) == []


def test_region_with_box_outside_the_image_rejects_the_input(api: Api) -> None:
    message = image_input("outside")
    message.data.regions.append(box(0.1, 0.1, 1.5, 0.5))

    reply = api.PostInputs(inputs=[message])

    assert_status(reply.inputs[0].status, codes.INPUT_INVALID_ARGUMENT, "bottom_row", "0 to 1")
    assert input_ids(api) == []


def test_inputs_naming_an_unknown_dataset_store_nothing(api: Api) -> None:
    reply = api.PostInputs(inputs=[text_input("a", "a", dataset_ids=["no-such-dataset"])])

    assert_status(reply, codes.CONN_DOES_NOT_EXIST, "no-such-dataset")
    assert input_ids(api) == []


def test_more_than_128_inputs_in_one_request_is_refused(api: Api) -> None:
    reply = api.PostInputs(inputs=[text_input(f"t{i}", "t") for i in range(129)])

    assert_status(reply, codes.INPUT_INVALID_REQUEST, "128", "129")
    assert input_ids(api) == []


def test_post_inputs_with_no_inputs_is_refused(api: Api) -> None:
    assert_status(api.PostInputs(inputs=[]), codes.INPUT_INVALID_REQUEST, "no inputs")


def test_get_unknown_input_is_reported_missing(api: Api) -> None:
    assert_status(api.GetInput(input_id="ghost"), codes.INPUT_DOES_NOT_EXIST, "ghost")


def test_inputs_of_an_unknown_app_are_reported_missing(api: Api) -> None:
    other = pb.UserAppIDSet(user_id=api.user_app_id.user_id, app_id="no-such-app")

    reply = api.PostInputs(user_app_id=other, inputs=[text_input("a", "a")])

    assert_status(reply, codes.CONN_DOES_NOT_EXIST, "no-such-app")
    assert_status(api.ListInputs(user_app_id=other), codes.CONN_DOES_NOT_EXIST, "no-such-app")


# ---- limits set by settings ------------------------------------------------------------------


LIMITS = {
    "MODELMILL_MAX_IMAGE_PIXELS": "10000",
    "MODELMILL_MAX_INPUT_BYTES": "50000",
    "MODELMILL_MAX_TEXT_CHARS": "50",
}


@pytest.fixture(scope="module")
def limited_server(start_server: Any) -> Server:
    """A server with small limits, so over-limit inputs are cheap to send."""
    return start_server(LIMITS)


@pytest.fixture(scope="module")
def limited_account(limited_server: Server) -> Account:
    return Account("limited", limited_server.token("limited"))


@pytest.fixture
def limited_api(limited_server: Server, limited_account: Account, transport: str) -> Api:
    app_id = create_app(limited_server, limited_account)
    return Api(limited_server, transport, limited_account.key, limited_account.user_id, app_id)


def test_image_over_the_pixel_setting_is_rejected(limited_api: Api) -> None:
    reply = limited_api.PostInputs(
        inputs=[image_input("big", png(101, 100)), image_input("small", png(100, 100))]
    )

    assert reply.status.code == codes.MIXED_STATUS
    assert_status(reply.inputs[0].status, codes.INPUT_OVER_LIMIT, "101x100", "10000 pixels")
    assert input_ids(limited_api) == ["small"]


def test_image_over_the_byte_setting_is_rejected(limited_api: Api) -> None:
    bmp = image_bytes(100, 100, "BMP")  # 30 KB of pixels, at the pixel limit
    large = bmp + b"\x00" * 30_000  # a valid image whose file is over the 50 KB limit

    reply = limited_api.PostInputs(inputs=[image_input("large", large), image_input("bmp", bmp)])

    assert reply.status.code == codes.MIXED_STATUS
    assert_status(reply.inputs[0].status, codes.INPUT_OVER_LIMIT, "bytes", "50000")
    assert input_ids(limited_api) == ["bmp"]


def test_text_over_the_length_setting_is_rejected(limited_api: Api) -> None:
    reply = limited_api.PostInputs(
        inputs=[text_input("long", "y" * 51), text_input("short", "y" * 50)]
    )

    assert_status(reply.inputs[0].status, codes.INPUT_OVER_LIMIT, "51 characters", "50")
    assert input_ids(limited_api) == ["short"]


def test_concurrent_batches_with_the_same_new_concepts_all_succeed(
    server: Server, api: Api
) -> None:
    """The SDK uploads batches from many threads; each batch creates the same new concepts."""
    from concurrent.futures import ThreadPoolExecutor

    def upload(batch: int) -> int:
        client = Api(server, api.transport, api.key, api.user_app_id.user_id, api.app_id)
        inputs = [
            text_input(f"b{batch}-{i}", "x", concepts=["shared", f"own-{batch}"]) for i in range(8)
        ]
        return int(client.PostInputs(inputs=inputs).status.code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(upload, range(8)))

    assert statuses == [codes.SUCCESS] * 8
    assert len(input_ids(api)) == 64
    concepts = [c.id for c in assert_ok(api.ListConcepts(per_page=100)).concepts]
    assert sorted(concepts) == sorted(["shared"] + [f"own-{b}" for b in range(8)])
