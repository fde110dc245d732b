"""A trained visual-embedder as the base model of transfer learning, through the official client:
an embedding-classifier names it in input_info.base_embed_model ({id, user_id, app_id,
model_version}), trains on its embeddings and predicts with them; two apps' embedders of one id
stay apart; references that cannot work are refused at once and leave nothing behind."""

from __future__ import annotations

from typing import Any

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, assert_status
from api.training.support import (
    SHAPES,
    accuracy,
    concepts_of,
    create_model,
    labelled_images,
    predict,
    struct,
    train,
    upload,
    wait_for_version,
    without_labels,
)
from conftest import Account, Api, Server, create_app

CONCEPTS = list(SHAPES)
# A few seconds on 2 cores; the SDK sends numbers as floats.
TINY_EMBEDDER = {
    "template": "Lite0_MultiSimilarity",
    "image_size": 32.0,
    "batch_size": 8.0,
    "num_epochs": 1.0,
    "embedding_size": 32.0,
}


def classifier_version(
    model_id: str, user_id: str = "", app_id: str = "", version_id: str = ""
) -> pb.ModelVersion:
    """A PostModelVersions version whose input_info.base_embed_model names a model."""
    version = pb.ModelVersion()
    version.output_info.data.concepts.extend(pb.Concept(id=c) for c in CONCEPTS)
    version.output_info.output_config.concepts_mutually_exclusive = True
    base = version.input_info.base_embed_model
    base.id, base.user_id, base.app_id = model_id, user_id, app_id
    base.model_version.id = version_id
    return version


def train_on(api: Api, model_id: str, version: pb.ModelVersion) -> pb.ModelVersion:
    reply = assert_ok(api.PostModelVersions(model_id=model_id, model_versions=[version]))
    done = wait_for_version(api, model_id, reply.model.model_version.id)
    assert done.status.code == codes.MODEL_TRAINED, done.status
    return done


def train_embedder(api: Api, seed: int) -> pb.ModelVersion:
    upload(api, labelled_images(4, seed=seed, prefix=f"e{seed}"))
    create_model(api, "emb", "visual-embedder", concepts=CONCEPTS)
    return train(api, "emb", train_params={**TINY_EMBEDDER, "seed": float(seed)})


def search_by_image(api: Api, image: bytes, embed_model_version_id: str) -> Any:
    """PostInputsSearches ranked by similarity to `image` under that embedder version."""
    annotation = pb.Annotation(
        data=pb.Data(image=pb.Image(base64=image)), embed_model_version_id=embed_model_version_id
    )
    return api.PostInputsSearches(
        searches=[pb.Search(query=pb.Query(ranks=[pb.Rank(annotation=annotation)]))],
        pagination=service.Pagination(page=1, per_page=3),
    )


def scores(api: Api, model_id: str, inputs: list[pb.Input]) -> list[float]:
    """Each input's score for each concept, in CONCEPTS order, one flat list."""
    reply = assert_ok(predict(api, model_id, [without_labels(i) for i in inputs]))
    return [dict(concepts_of(output))[c] for output in reply.outputs for c in CONCEPTS]


@pytest.mark.slow
def test_a_classifier_learns_on_a_trained_embedder_and_apps_keep_theirs_apart(
    training_server: Server, trainer: Account, trainer_api: Api
) -> None:
    api = trainer_api
    embedder = train_embedder(api, seed=1)
    create_model(api, "shapes", concepts=CONCEPTS)
    # No version named: the embedder's newest trained one, pinned on the classifier's version.
    version = train_on(api, "shapes", classifier_version("emb"))
    base = version.input_info.base_embed_model
    assert (base.id, base.user_id, base.app_id) == ("emb", trainer.user_id, api.app_id)
    assert base.model_version.id == embedder.id
    used = version.metrics.eval_info.params["base_embed_model"]  # the embedder's scoped id
    assert used == f"{trainer.user_id}/{api.app_id}/emb@{embedder.id}"
    # Visual search with the trained embedder: an uploaded image finds itself first.
    uploaded = labelled_images(4, seed=1, prefix="e1")[5]
    hits = assert_ok(search_by_image(api, uploaded.data.image.base64, embedder.id)).hits
    assert hits[0].input.id == uploaded.id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    wrong = search_by_image(api, uploaded.data.image.base64, version.id)  # a classifier's
    assert_status(wrong, codes.MODEL_INVALID_ARGUMENT, "shapes", "embedding-classifier")

    held_out = labelled_images(4, seed=7, prefix="held-out")
    assert accuracy(api, "shapes", held_out) >= 0.75
    before = scores(api, "shapes", held_out)

    # Another app of the same user, with its own "emb" trained on other images.
    other = Api(
        training_server, "grpc", trainer.key, trainer.user_id, create_app(training_server, trainer)
    )
    other_embedder = train_embedder(other, seed=2)
    assert other_embedder.id != embedder.id
    create_model(other, "own", concepts=CONCEPTS)
    own = train_on(other, "own", classifier_version("emb"))
    assert own.input_info.base_embed_model.app_id == other.app_id
    assert own.input_info.base_embed_model.model_version.id == other_embedder.id
    assert own.metrics.eval_info.params["base_embed_model"].startswith(
        f"{trainer.user_id}/{other.app_id}/emb@"
    )
    # ...and a classifier there on the first app's embedder, named with its user and app.
    create_model(other, "borrowed", concepts=CONCEPTS)
    borrowed = train_on(
        other, "borrowed", classifier_version("emb", trainer.user_id, api.app_id, embedder.id)
    )
    assert borrowed.input_info.base_embed_model.app_id == api.app_id
    assert accuracy(other, "borrowed", held_out) >= 0.75

    # The first app's classifier still embeds with its own app's embedder.
    assert scores(api, "shapes", held_out) == pytest.approx(before, abs=1e-5)


def refuse(api: Api, model_id: str, version: pb.ModelVersion) -> Any:
    """PostModelVersions that must be refused, leaving the classifier without versions."""
    reply = api.PostModelVersions(model_id=model_id, model_versions=[version])
    assert reply.status.code != codes.SUCCESS, "the training was accepted"
    assert not assert_ok(api.ListModelVersions(model_id=model_id)).model_versions
    return reply


def test_base_embed_models_that_cannot_work_are_refused(
    training_server: Server, trainer: Account, trainer_api: Api
) -> None:
    api = trainer_api
    upload(api, labelled_images(2, prefix="r"))
    create_model(api, "shapes", concepts=CONCEPTS)
    create_model(api, "classifier", "visual-classifier", concepts=CONCEPTS)
    create_model(api, "emb", "visual-embedder", concepts=CONCEPTS)

    missing = refuse(api, "shapes", classifier_version("no-such-embedder"))
    assert_status(missing, codes.MODEL_DOES_NOT_EXIST, "no-such-embedder", "efficientnet-lite0")
    wrong_type = refuse(api, "shapes", classifier_version("classifier"))
    assert_status(wrong_type, codes.MODEL_INVALID_ARGUMENT, "classifier", "visual-embedder")
    untrained = refuse(api, "shapes", classifier_version("emb"))
    assert_status(untrained, codes.MODEL_UNTRAINED, "emb")
    no_version = refuse(api, "shapes", classifier_version("emb", version_id="nope"))
    assert_status(no_version, codes.MODEL_DOES_NOT_EXIST, "nope")
    other_user = refuse(api, "shapes", classifier_version("emb", "someone-else", api.app_id))
    assert_status(other_user, codes.CONN_INSUFFICIENT_SCOPES, "someone-else")
    other_app = refuse(api, "shapes", classifier_version("emb", app_id="no-such-app"))
    assert_status(other_app, codes.CONN_DOES_NOT_EXIST, "no-such-app")

    unknown = search_by_image(api, labelled_images(1)[0].data.image.base64, "nope")
    assert_status(unknown, codes.MODEL_DOES_NOT_EXIST, "nope", "embed_model_version_id")

    # The clarifai SDK sends every field in train_info.params, where the reference is a string.
    garbled = pb.ModelVersion()
    garbled.CopyFrom(classifier_version(""))
    garbled.train_info.params.CopyFrom(struct({"base_embed_model": "a/b"}))
    assert_status(refuse(api, "shapes", garbled), codes.MODEL_INVALID_ARGUMENT, "a/b")

    # A key limited to one app may not name another app's embedder.
    elsewhere = create_app(training_server, trainer)
    limited = Api(
        training_server,
        "grpc",
        training_server.token(trainer.user_id, api.app_id),
        trainer.user_id,
        api.app_id,
    )
    refused = refuse(limited, "shapes", classifier_version("emb", app_id=elsewhere))
    assert_status(refused, codes.CONN_INSUFFICIENT_SCOPES, elsewhere)
