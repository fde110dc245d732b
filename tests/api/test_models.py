"""Models, model versions as records, and the model types registry over gRPC and REST.
(Training itself is tested in tests/api/training.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select

from api.helpers import assert_ok, assert_status
from conftest import Api

EMBEDDING_CLASSIFIER = "embedding-classifier"


def model_ids(api: Api, **filters: Any) -> list[str]:
    return [m.id for m in assert_ok(api.ListModels(per_page=1000, **filters)).models]


def create_model(
    api: Api, model_id: str = "pets", concepts: tuple[str, ...] = ("cat", "dog"), **fields: Any
) -> pb.Model:
    model = pb.Model(
        id=model_id,
        model_type_id=fields.pop("model_type_id", EMBEDDING_CLASSIFIER),
        output_info=pb.OutputInfo(
            data=pb.Data(concepts=[pb.Concept(id=c) for c in concepts]),
            output_config=pb.OutputConfig(concepts_mutually_exclusive=True),
        ),
        **fields,
    )
    return assert_ok(api.PostModels(model=model)).model


def add_version(
    database: Any, api: Api, model_id: str, version_id: str, status: int, age_s: int = 0
) -> None:
    """A version row as training leaves it; PostModelVersions belongs to the training tests."""
    from modelmill.store.tables import App, Model, ModelVersion, User

    with database.session() as session:
        model_pk = session.scalar(
            select(Model.pk)
            .join(App, App.pk == Model.app_pk)
            .join(User, User.pk == App.user_pk)
            .where(User.id == api.user_app_id.user_id, App.id == api.app_id, Model.id == model_id)
        )
        created = datetime.now(UTC) - timedelta(seconds=age_s)
        session.add(
            ModelVersion(
                model_pk=model_pk,
                id=version_id,
                status_code=status,
                output_info={"data": {"concepts": [{"id": "cat"}]}},
                created_at=created,
                modified_at=created,
            )
        )


# ---- models ----------------------------------------------------------------------------------


def test_post_model_then_get_it_with_its_concepts_and_settings(api: Api) -> None:
    created = create_model(api, "pets", name="Pet finder", description="cats vs dogs")

    assert (created.id, created.name, created.model_type_id) == (
        "pets",
        "Pet finder",
        EMBEDDING_CLASSIFIER,
    )
    got = assert_ok(api.GetModel(model_id="pets")).model
    assert [c.id for c in got.output_info.data.concepts] == ["cat", "dog"]
    assert got.output_info.output_config.concepts_mutually_exclusive is True
    assert (got.description, got.app_id) == ("cats vs dogs", api.app_id)
    output_info = assert_ok(api.GetModelOutputInfo(model_id="pets")).model.output_info
    assert [c.id for c in output_info.data.concepts] == ["cat", "dog"]


def test_list_models_filters_by_type_and_pages(api: Api) -> None:
    create_model(api, "a")
    create_model(api, "b")
    create_model(api, "c", model_type_id="visual-classifier")

    assert model_ids(api) == ["a", "b", "c"]
    assert model_ids(api, model_type_id="visual-classifier") == ["c"]
    assert [m.id for m in assert_ok(api.ListModels(page=2, per_page=2)).models] == ["c"]
    assert list(assert_ok(api.ListModels(page=3, per_page=2)).models) == []


def test_patch_models_merges_or_overwrites(api: Api) -> None:
    create_model(api, "pets")

    renamed = api.PatchModels(models=[pb.Model(id="pets", name="Renamed")], action="merge")
    assert assert_ok(renamed).models[0].name == "Renamed"
    new_concepts = pb.Model(
        id="pets", output_info=pb.OutputInfo(data=pb.Data(concepts=[pb.Concept(id="bird")]))
    )
    assert_ok(api.PatchModels(models=[new_concepts], action="overwrite"))

    got = assert_ok(api.GetModel(model_id="pets")).model
    assert got.name == "Renamed"
    assert [c.id for c in got.output_info.data.concepts] == ["bird"]


def test_delete_model_and_delete_models(api: Api) -> None:
    for model_id in ("a", "b", "c"):
        create_model(api, model_id)

    assert_ok(api.DeleteModel(model_id="a"))
    assert_ok(api.DeleteModels(ids=["b", "c"]))

    assert model_ids(api) == []
    assert_status(api.GetModel(model_id="a"), codes.MODEL_DOES_NOT_EXIST, "'a'")


def test_list_model_concepts_names_the_models_concepts(api: Api) -> None:
    assert_ok(api.PostConcepts(concepts=[pb.Concept(id="cat", name="Cat")]))
    create_model(api, "pets", concepts=("cat", "dog"))

    concepts = assert_ok(api.ListModelConcepts(model_id="pets")).concepts

    assert [(c.id, c.name) for c in concepts] == [("cat", "Cat"), ("dog", "dog")]


def test_post_model_of_unknown_type_is_refused(api: Api) -> None:
    reply = api.PostModels(model=pb.Model(id="odd", model_type_id="time-machine"))

    assert_status(reply, codes.MODEL_INVALID_ARGUMENT, "time-machine", EMBEDDING_CLASSIFIER)
    assert model_ids(api) == []


def test_post_model_with_taken_or_bad_id_is_refused(api: Api) -> None:
    create_model(api, "pets")

    taken = api.PostModels(model=pb.Model(id="pets", model_type_id=EMBEDDING_CLASSIFIER))
    bad = api.PostModels(model=pb.Model(id="bad id", model_type_id=EMBEDDING_CLASSIFIER))
    missing = api.PostModels()

    assert_status(taken, codes.MODEL_INVALID_ARGUMENT, "already exists")
    assert_status(bad, codes.MODEL_INVALID_ARGUMENT, "bad id")
    assert_status(missing, codes.MODEL_INVALID_ARGUMENT)
    assert model_ids(api) == ["pets"]


def test_unknown_model_is_reported_missing_everywhere(api: Api) -> None:
    missing = codes.MODEL_DOES_NOT_EXIST

    assert_status(api.GetModel(model_id="ghost"), missing, "ghost")
    assert_status(api.GetModelOutputInfo(model_id="ghost"), missing, "ghost")
    assert_status(
        api.PatchModels(models=[pb.Model(id="ghost", name="x")], action="merge"), missing, "ghost"
    )
    assert_status(api.DeleteModel(model_id="ghost"), missing, "ghost")
    assert_status(api.ListModelConcepts(model_id="ghost"), missing, "ghost")
    assert_status(api.ListModelVersions(model_id="ghost"), missing, "ghost")
    assert_status(api.GetModelVersion(model_id="ghost", version_id="v1"), missing, "ghost")


# ---- model versions (records) ------------------------------------------------------------------


def test_get_model_answers_its_newest_version_even_while_it_trains(api: Api, database: Any) -> None:
    create_model(api, "pets")
    add_version(database, api, "pets", "old", codes.MODEL_TRAINED, age_s=60)
    add_version(database, api, "pets", "new", codes.MODEL_TRAINING)

    newest = assert_ok(api.GetModel(model_id="pets")).model.model_version
    chosen = assert_ok(api.GetModel(model_id="pets", version_id="old")).model.model_version

    assert (newest.id, newest.status.code) == ("new", codes.MODEL_TRAINING)
    assert (chosen.id, chosen.status.code) == ("old", codes.MODEL_TRAINED)


def test_model_versions_list_get_patch_and_delete(api: Api, database: Any) -> None:
    create_model(api, "pets")
    add_version(database, api, "pets", "v1", codes.MODEL_TRAINED, age_s=60)
    add_version(database, api, "pets", "v2", codes.MODEL_TRAINING_FAILED)

    listed = assert_ok(api.ListModelVersions(model_id="pets")).model_versions
    assert [(v.id, v.status.code) for v in listed] == [
        ("v2", codes.MODEL_TRAINING_FAILED),
        ("v1", codes.MODEL_TRAINED),
    ]

    got = assert_ok(api.GetModelVersion(model_id="pets", version_id="v1")).model_version
    assert got.status.code == codes.MODEL_TRAINED and got.train_log

    patched = api.PatchModelVersions(
        model_id="pets",
        model_versions=[pb.ModelVersion(id="v1", description="the good one")],
        action="merge",
    )
    assert assert_ok(patched).model_versions[0].description == "the good one"
    assert (
        assert_ok(api.GetModelVersion(model_id="pets", version_id="v1")).model_version.description
        == "the good one"
    )

    assert_ok(api.DeleteModelVersion(model_id="pets", version_id="v2"))
    assert [v.id for v in assert_ok(api.ListModelVersions(model_id="pets")).model_versions] == [
        "v1"
    ]


def test_unknown_model_version_is_reported_missing(api: Api) -> None:
    create_model(api, "pets")
    missing = codes.MODEL_DOES_NOT_EXIST

    assert_status(api.GetModelVersion(model_id="pets", version_id="v9"), missing, "v9")
    assert_status(api.GetModel(model_id="pets", version_id="v9"), missing, "v9")
    assert_status(api.DeleteModelVersion(model_id="pets", version_id="v9"), missing, "v9")
    patch = api.PatchModelVersions(
        model_id="pets", model_versions=[pb.ModelVersion(id="v9")], action="merge"
    )
    assert_status(patch, missing, "v9")


# ---- model types -----------------------------------------------------------------------------


def field_paths(fields: Any) -> list[str]:
    return [f.path for f in fields]


def test_list_model_types_describes_every_trainable_type(api: Api) -> None:
    types = assert_ok(api.ListModelTypes(per_page=100)).model_types
    by_id = {t.id: t for t in types}

    assert EMBEDDING_CLASSIFIER in by_id
    for model_type in types:
        assert model_type.trainable and model_type.model_type_fields, model_type.id
        for field in model_type.model_type_fields:
            # The SDK splits paths on '.', and needs at least two parts.
            assert len(field.path.split(".")) >= 2, (model_type.id, field.path)
            if field.path.endswith(".template"):
                assert field.model_type_enum_options, (model_type.id, "template without options")
                for option in field.model_type_enum_options:
                    assert option.id and option.model_type_fields, (model_type.id, option.id)
    embedding = field_paths(by_id[EMBEDDING_CLASSIFIER].model_type_fields)
    assert "output_info.output_config.concepts_mutually_exclusive" in embedding
    assert not any(p.endswith(".template") for p in embedding)  # this type takes no template


def test_list_model_types_pages_until_empty(api: Api) -> None:
    every = [t.id for t in assert_ok(api.ListModelTypes(per_page=100)).model_types]
    paged: list[str] = []
    for page in range(1, len(every) + 2):
        ids = [t.id for t in assert_ok(api.ListModelTypes(page=page, per_page=1)).model_types]
        paged += ids
        if not ids:
            break
    assert paged == every


def test_get_model_type_by_id(api: Api) -> None:
    model_type = assert_ok(api.GetModelType(model_type_id=EMBEDDING_CLASSIFIER)).model_type

    assert model_type.id == EMBEDDING_CLASSIFIER
    assert_status(
        api.GetModelType(model_type_id="time-machine"), codes.MODEL_INVALID_ARGUMENT, "time-machine"
    )
