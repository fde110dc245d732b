"""Search through the `clarifai` SDK's Search.query (PostInputsSearches): by concept, metadata and
input type, and by text or visual similarity over the base models' embeddings (computed during
the search when the background job has not yet). PostAnnotationsSearches, PostModelsSearches,
PatchApp, DeleteApp and GetUser through clarifai-grpc and the SDK."""

from __future__ import annotations

import random
from typing import Any

import pytest
from clarifai.client.app import App
from clarifai.client.input import Inputs
from clarifai.client.user import User
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import struct_pb2

from api.helpers import assert_ok, assert_status, box, image_input, jpeg, text_input
from api.sdk_support import new_sdk_app, sdk_base_url
from api.training.support import shape_image
from conftest import Account, Api, Server

TEXTS = {
    "sport-1": ("The striker scored a late goal and the football crowd cheered.", "sports"),
    "sport-2": ("The tennis champion won the final in straight sets.", "sports"),
    "food-1": ("Simmer the tomato sauce with garlic and fresh basil.", "cooking"),
    "food-2": ("Knead the dough and bake the bread until golden.", "cooking"),
    "bank-1": ("The central bank raised interest rates again this quarter.", "finance"),
}


def struct(**values: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


@pytest.fixture(scope="module")
def library(server: Server, owner: Account) -> App:
    """An app with five labelled texts (metadata source web/print) and six labelled shapes."""
    app = new_sdk_app(server, owner, "search")
    rng = random.Random(7)
    inputs = [
        Inputs.get_text_input(
            input_id,
            text,
            labels=[topic],
            metadata=struct(source="web" if n % 2 else "print", lang="en"),
        )
        for n, (input_id, (text, topic)) in enumerate(TEXTS.items())
    ]
    for concept in ("red-circle", "green-square"):
        for n in range(3):
            inputs.append(
                Inputs.get_input_from_bytes(
                    f"{concept}-{n}", image_bytes=shape_image(concept, rng), labels=[concept]
                )
            )
    app.inputs().upload_inputs(inputs)
    return app


def search(app: App, server: Server, owner: Account, **query: Any) -> list[Any]:
    """Every hit of Search.query(**query), in order."""
    finder = (
        User(user_id=owner.user_id, pat=owner.key, base_url=sdk_base_url(server))
        .app(app_id=app.id)
        .search(top_k=20, metric="cosine", algorithm="brute_force")
    )
    return [hit for page in finder.query(**query) for hit in page.hits]


def ids(hits: list[Any]) -> list[str]:
    return [h.input.id for h in hits]


def test_sdk_search_by_concept(library: App, server: Server, owner: Account) -> None:
    hits = search(library, server, owner, filters=[{"concepts": [{"id": "cooking", "value": 1}]}])
    assert sorted(ids(hits)) == ["food-1", "food-2"]
    either = search(
        library,
        server,
        owner,
        filters=[{"concepts": [{"name": "finance", "value": 1}, {"id": "red-circle", "value": 1}]}],
    )
    assert sorted(ids(either)) == ["bank-1", "red-circle-0", "red-circle-1", "red-circle-2"]


def test_sdk_search_by_metadata_and_input_type(
    library: App, server: Server, owner: Account
) -> None:
    web = search(library, server, owner, filters=[{"metadata": {"source": "web"}}])
    assert sorted(ids(web)) == ["food-2", "sport-2"]
    images = search(library, server, owner, filters=[{"input_types": ["image"]}])
    assert len(images) == 6 and all(h.input.data.image.url for h in images)
    # Filters are ANDed: printed texts about sports.
    both = search(
        library,
        server,
        owner,
        filters=[{"metadata": {"source": "print"}}, {"concepts": [{"id": "sports", "value": 1}]}],
    )
    assert ids(both) == ["sport-1"]


def test_sdk_search_by_text_similarity(library: App, server: Server, owner: Account) -> None:
    hits = search(
        library, server, owner, ranks=[{"text_raw": "a penalty kick in the soccer match"}]
    )
    assert ids(hits)[0] == "sport-1"
    assert len(hits) == len(TEXTS)  # a text ranks texts only
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    recipes = search(
        library,
        server,
        owner,
        ranks=[{"text_raw": "an oven recipe for baking"}],
        filters=[{"concepts": [{"id": "cooking", "value": 1}]}],
    )
    assert ids(recipes)[0] == "food-2" and len(recipes) == 2


def test_sdk_search_by_visual_similarity(library: App, server: Server, owner: Account) -> None:
    query = shape_image("red-circle", random.Random(99))
    hits = search(library, server, owner, ranks=[{"image_bytes": query}])
    assert len(hits) == 6
    assert set(ids(hits)[:3]) == {"red-circle-0", "red-circle-1", "red-circle-2"}


def test_search_pages_and_min_value(library: App, api_for: Any) -> None:
    api = api_for(library.id)
    rank = pb.Rank(annotation=pb.Annotation(data=pb.Data(text=pb.Text(raw="bank interest"))))
    request = dict(searches=[pb.Search(query=pb.Query(ranks=[rank]))])
    first = assert_ok(
        api.PostInputsSearches(pagination=service.Pagination(page=1, per_page=2), **request)
    )
    second = assert_ok(
        api.PostInputsSearches(pagination=service.Pagination(page=2, per_page=2), **request)
    )
    assert first.hits[0].input.id == "bank-1"
    assert len(first.hits) == len(second.hits) == 2
    assert not {h.input.id for h in first.hits} & {h.input.id for h in second.hits}
    cut = first.hits[0].score - 1e-6
    strict = pb.Search(query=pb.Query(ranks=[rank]), min_value=cut)
    assert [h.input.id for h in assert_ok(api.PostInputsSearches(searches=[strict])).hits] == [
        "bank-1"
    ]


@pytest.fixture
def api_for(server: Server, owner: Account, transport: str) -> Any:
    return lambda app_id: Api(server, transport, owner.key, owner.user_id, app_id)


def test_annotation_search_matches_each_annotations_own_labels(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[image_input("photo"), text_input("note", concepts=["cat"])]))
    regions = pb.Data(regions=[box(0.1, 0.1, 0.5, 0.5, "dog")])
    assert_ok(
        api.PostAnnotations(annotations=[pb.Annotation(id="a1", input_id="photo", data=regions)])
    )
    concept = pb.Filter(
        annotation=pb.Annotation(data=pb.Data(concepts=[pb.Concept(id="dog", value=1)]))
    )
    reply = assert_ok(
        api.PostAnnotationsSearches(searches=[pb.Search(query=pb.Query(filters=[concept]))])
    )
    assert [(h.annotation.id, h.input.id) for h in reply.hits] == [("a1", "photo")]
    negated = pb.Filter(negate=True, annotation=concept.annotation)
    others = assert_ok(
        api.PostAnnotationsSearches(searches=[pb.Search(query=pb.Query(filters=[negated]))])
    )
    assert [h.input.id for h in others.hits] == ["note"]


def test_bad_searches_say_what_to_change(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input("note")]))
    assert_status(api.PostInputsSearches(searches=[]), codes.SEARCH_INVALID_REQUEST, "one search")
    mixed = pb.Query(
        ranks=[
            pb.Rank(annotation=pb.Annotation(data=pb.Data(text=pb.Text(raw="x")))),
            pb.Rank(annotation=pb.Annotation(data=pb.Data(image=pb.Image(base64=jpeg())))),
        ]
    )
    assert_status(
        api.PostInputsSearches(searches=[pb.Search(query=mixed)]),
        codes.SEARCH_INVALID_REQUEST,
        "not both",
    )
    unreadable = pb.Query(
        ranks=[pb.Rank(annotation=pb.Annotation(data=pb.Data(image=pb.Image(base64=b"no"))))]
    )
    reply = api.PostInputsSearches(searches=[pb.Search(query=unreadable)])
    assert reply.status.code == codes.INPUT_UNSUPPORTED_FORMAT, reply.status
    ghost = pb.Query(ranks=[pb.Rank(annotation=pb.Annotation(input_id="ghost"))])
    assert_status(
        api.PostInputsSearches(searches=[pb.Search(query=ghost)]),
        codes.INPUT_DOES_NOT_EXIST,
        "ghost",
    )


def test_similar_to_a_stored_input(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input(i, text) for i, (text, _) in TEXTS.items()]))
    rank = pb.Rank(annotation=pb.Annotation(input_id="food-2"))
    reply = assert_ok(api.PostInputsSearches(searches=[pb.Search(query=pb.Query(ranks=[rank]))]))
    assert [h.input.id for h in reply.hits][:2] == ["food-2", "food-1"]
    assert reply.hits[0].score == pytest.approx(1.0, abs=1e-4)


# ---- models, apps and the user ---------------------------------------------------------------


def test_models_search_by_name_and_type(api: Api) -> None:
    for model_id, type_id in [
        ("cat-detector", "embedding-classifier"),
        ("Cat-Classifier", "visual-classifier"),
        ("dogs", "visual-classifier"),
    ]:
        assert_ok(
            api.PostModels(
                model=pb.Model(id=model_id.lower(), name=model_id, model_type_id=type_id)
            )
        )
    by_name = assert_ok(api.PostModelsSearches(model_query=pb.ModelQuery(name="CAT")))
    assert sorted(m.id for m in by_name.models) == ["cat-classifier", "cat-detector"]
    both = assert_ok(
        api.PostModelsSearches(
            model_query=pb.ModelQuery(name="cat", model_type_id="visual-classifier")
        )
    )
    assert [m.id for m in both.models] == ["cat-classifier"]


def test_sdk_patches_and_deletes_an_app_and_reads_its_user(server: Server, owner: Account) -> None:
    user = User(user_id=owner.user_id, pat=owner.key, base_url=sdk_base_url(server))
    app = new_sdk_app(server, owner, "patched")
    user.patch_app(app.id, action="overwrite", description="renamed for the demo", name="Demo")
    api = Api(server, "grpc", owner.key, owner.user_id, app.id)
    stored = assert_ok(api.GetApp()).app
    assert (stored.name, stored.description) == ("Demo", "renamed for the demo")

    assert user.get_user_info().user.id == owner.user_id

    user.delete_app(app.id)
    assert_status(api.GetApp(), codes.CONN_DOES_NOT_EXIST, app.id)


def test_app_limited_keys_cannot_delete_apps(
    server: Server, owner: Account, app_id: str, transport: str
) -> None:
    limited = Api(server, transport, server.token(owner.user_id, app_id), owner.user_id, app_id)
    assert_status(limited.DeleteApp(), codes.CONN_INSUFFICIENT_SCOPES, "limited")
    assert_status(
        limited.GetUser(user_app_id=pb.UserAppIDSet(user_id="someone-else")),
        codes.CONN_INSUFFICIENT_SCOPES,
        "someone-else",
    )
    assert_ok(limited.GetApp())
