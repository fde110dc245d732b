"""What REST clients rely on beyond the official client: scoped and unscoped paths, trailing
slashes, literal segments, DELETE bodies, unknown fields, paging, header case, defaults."""

from __future__ import annotations

import json

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from conftest import Account, Http, Server, create_app


def texts(http: Http, *ids: str, **extra: object) -> None:
    body = {"inputs": [{"id": i, "data": {"text": {"raw": f"text {i}"}}} for i in ids], **extra}
    reply = http.post("inputs", json=body)
    assert reply.json()["status"]["code"] == codes.SUCCESS, reply.text


def ids_of(reply) -> list[str]:  # type: ignore[no-untyped-def]
    assert reply.status_code == 200, reply.text
    return [i["id"] for i in reply.json().get("inputs", [])]


@pytest.fixture(scope="module")
def limited_key(server: Server, owner: Account) -> tuple[str, str]:
    """(app id, key) limited to that app: unscoped paths then mean that app."""
    app_id = create_app(server, owner)
    return app_id, server.token(owner.user_id, app_id)


# ---- paths -----------------------------------------------------------------------------------


def test_unscoped_paths_use_the_app_of_an_app_limited_key(
    server: Server, owner: Account, limited_key: tuple[str, str]
) -> None:
    app_id, key = limited_key
    unscoped = Http(server, key, owner.user_id, app_id)
    marker = f"unscoped-{len(ids_of(unscoped.get('/v2/inputs?per_page=1000')))}"

    posted = unscoped.post(
        "/v2/inputs", json={"inputs": [{"id": marker, "data": {"text": {"raw": "x"}}}]}
    )

    assert posted.json()["status"]["code"] == codes.SUCCESS
    assert marker in ids_of(unscoped.get("/v2/inputs", params={"per_page": 1000}))
    assert marker in ids_of(
        unscoped.get(f"/v2/users/me/apps/{app_id}/inputs", params={"per_page": 1000})
    )
    assert unscoped.get(f"/v2/inputs/{marker}").json()["input"]["id"] == marker


def test_unscoped_path_with_a_key_for_every_app_asks_for_the_app(http: Http) -> None:
    reply = http.get("/v2/inputs")

    assert reply.json()["status"]["code"] == codes.CONN_INVALID_REQUEST
    assert "user_app_id.app_id" in reply.json()["status"]["description"]


def test_unscoped_path_takes_the_app_from_query_parameters(http: Http) -> None:
    texts(http, "q1")
    app_id = http.app_path.rsplit("/", 1)[-1]

    reply = http.get(
        "/v2/inputs", params={"user_app_id.user_id": "me", "user_app_id.app_id": app_id}
    )

    assert ids_of(reply) == ["q1"]


@pytest.mark.parametrize("suffix", ["", "/"], ids=["plain", "trailing-slash"])
def test_trailing_slashes_are_accepted(http: Http, suffix: str) -> None:
    texts(http, "a")

    assert ids_of(http.get("inputs" + suffix)) == ["a"]
    assert http.get("inputs/a" + suffix).json()["input"]["id"] == "a"
    reply = http.post("concepts" + suffix, json={"concepts": [{"id": "slashy"}]})
    assert reply.json()["status"]["code"] == codes.SUCCESS


def test_models_types_is_list_model_types_not_get_model(http: Http) -> None:
    reply = http.get("models/types")

    assert reply.status_code == 200
    assert any(t["id"] == "embedding-classifier" for t in reply.json()["model_types"])
    assert (
        http.get("models/types/embedding-classifier").json()["model_type"]["id"]
        == "embedding-classifier"
    )
    assert http.get("/v2/models/types").json()["model_types"]  # unscoped too


def test_inputs_status_is_get_input_count_not_get_input(http: Http) -> None:
    texts(http, "a", "b")

    reply = http.get("inputs/status")

    assert reply.status_code == 200
    assert int(reply.json()["counts"]["processed"]) == 2


def test_inputs_jobs_add_is_get_inputs_add_job(http: Http) -> None:
    texts(http, "a", inputs_add_job_id="job-7")

    reply = http.get("inputs/jobs/add/job-7")

    assert reply.status_code == 200
    job = reply.json()["inputs_add_job"]
    assert job["id"] == "job-7"
    assert int(job["progress"].get("pending_count", 0)) == 0
    assert int(job["progress"].get("in_progress_count", 0)) == 0


def test_unknown_path_answers_404_with_a_status(http: Http) -> None:
    reply = http.get("no/such/thing")

    assert reply.status_code == 404
    assert reply.json()["status"]["code"] == codes.CONN_DOES_NOT_EXIST
    assert "no/such/thing" in reply.json()["status"]["details"]


# ---- bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_delete_reads_a_json_body_whatever_its_content_type(
    http: Http, content_type: str | None
) -> None:
    texts(http, "keep", "drop")
    headers = {"Authorization": f"Key {http.key}"}
    if content_type:
        headers["Content-Type"] = content_type

    reply = http.delete("inputs", data=json.dumps({"ids": ["drop"]}), headers=headers)

    assert reply.json()["status"]["code"] == codes.SUCCESS, reply.text
    assert ids_of(http.get("inputs")) == ["keep"]


def test_unknown_json_fields_are_ignored(http: Http) -> None:
    body = {
        "brand_new_field": {"nested": [1, 2]},
        "inputs": [{"id": "a", "future_field": True, "data": {"text": {"raw": "x", "lang": "xx"}}}],
    }

    reply = http.post("inputs", json=body)

    assert reply.json()["status"]["code"] == codes.SUCCESS
    assert ids_of(http.get("inputs")) == ["a"]


def test_body_that_is_not_json_is_refused_clearly(http: Http) -> None:
    headers = {"Authorization": f"Key {http.key}", "Content-Type": "application/json"}

    reply = http.post("inputs", data="{not json", headers=headers)
    array = http.post("inputs", json=[1, 2, 3])

    assert reply.status_code == 400
    assert reply.json()["status"]["code"] == codes.CONN_BAD_REQUEST_FORMAT
    assert array.json()["status"]["code"] == codes.CONN_BAD_REQUEST_FORMAT
    assert "object" in array.json()["status"]["description"]
    assert ids_of(http.get("inputs")) == []


def test_concept_without_value_is_a_positive_label(http: Http) -> None:
    body = {
        "inputs": [
            {
                "id": "a",
                "data": {
                    "text": {"raw": "x"},
                    "concepts": [{"id": "cat"}, {"id": "dog", "value": 0}],
                },
            }
        ]
    }
    assert http.post("inputs", json=body).json()["status"]["code"] == codes.SUCCESS
    annotation = {"annotations": [{"input_id": "a", "data": {"concepts": [{"id": "bird"}]}}]}
    assert http.post("annotations", json=annotation).json()["status"]["code"] == codes.SUCCESS

    concepts = http.get("inputs/a").json()["input"]["data"]["concepts"]

    assert sorted((c["id"], c["value"]) for c in concepts) == [
        ("bird", 1.0),
        ("cat", 1.0),
        ("dog", 0.0),
    ]


def test_repeated_query_parameters_fill_repeated_fields(http: Http) -> None:
    texts(http, "a", "b", "c")

    reply = http.get("inputs", params=[("ids", "a"), ("ids", "c")])

    assert sorted(ids_of(reply)) == ["a", "c"]


# ---- paging ----------------------------------------------------------------------------------


def test_per_page_zero_means_the_default_page_size(http: Http) -> None:
    texts(http, *[f"a{i}" for i in range(100)])
    texts(http, *[f"b{i}" for i in range(40)])

    default = ids_of(http.get("inputs", params={"per_page": 0}))
    unset = ids_of(http.get("inputs"))

    assert len(default) == 128
    assert default == unset


def test_a_page_past_the_end_is_an_empty_list(http: Http) -> None:
    texts(http, "a", "b", "c")

    assert ids_of(http.get("inputs", params={"page": 2, "per_page": 2})) == ["a"]
    reply = http.get("inputs", params={"page": 3, "per_page": 2})

    assert ids_of(reply) == []
    assert reply.json()["status"]["code"] == codes.SUCCESS


# ---- headers and HTTP statuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    "header", ["authorization", "AUTHORIZATION", "Authorization", "aUtHoRiZaTiOn"]
)
def test_header_names_in_any_case(http: Http, header: str) -> None:
    reply = http.get("inputs", headers={header: f"Key {http.key}"})

    assert reply.status_code == 200


def test_key_scheme_in_any_case(http: Http) -> None:
    assert http.get("inputs", headers={"Authorization": f"key {http.key}"}).status_code == 200


def test_http_status_follows_the_reply_status(http: Http) -> None:
    texts(http, "taken")
    mixed = http.post(
        "inputs",
        json={
            "inputs": [
                {"id": "taken", "data": {"text": {"raw": "x"}}},
                {"id": "new", "data": {"text": {"raw": "x"}}},
            ]
        },
    )

    assert mixed.status_code == 207
    assert http.get("inputs/ghost").status_code == 404
    assert http.get("inputs", headers={"Authorization": "Key nope"}).status_code == 401
    assert http.get("/v2/users/somebody-else/apps/x/inputs").status_code == 403
    assert (
        http.post(
            "inputs", json={"inputs": [{"id": "bad id", "data": {"text": {"raw": "x"}}}]}
        ).status_code
        == 400
    )
