"""Base embedders of transfer learning: a built-in one by id, or a trained embedder model of this
app (or of another app of the same user that the caller's key may read), loaded from the blob
store by its own template's predictor and known to this process under an id scoped to its app
and version, `user/app/model@version`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select

from modelmill.domain.errors import ApiError
from modelmill.services import AppScope, Env, auth
from modelmill.services.models import local_artifacts, trained_version
from modelmill.store.tables import App, Model, ModelVersion, User
from modelmill.training.embedders import (
    Embedder,
    TrainedEmbedder,
    embedder_ids,
    register_embedder,
)
from modelmill.training.registry import MODEL_TYPES, find_template

EMBEDDINGS_OUTPUT = "embeddings"  # a model type whose outputs these are can be a base model
BASE_EMBEDDER = "base_embedder"  # the training job's payload: the trained embedder to load
INPUT_INFO_KEY = "base_embed_model"  # where a version's input_info names its base model


@dataclass(frozen=True)
class TrainedEmbedderSource:
    """A trained embedder version chosen as a base model: whose it is and what loads it."""

    user_id: str
    app_id: str
    model_id: str
    version_id: str
    model_type_id: str
    template: str
    artifacts_key: str

    @property
    def embedder_id(self) -> str:
        return f"{self.user_id}/{self.app_id}/{self.model_id}@{self.version_id}"

    def reference(self) -> dict[str, Any]:
        """As Clarifai's input_info.base_embed_model, a Model message."""
        return {
            "id": self.model_id,
            "user_id": self.user_id,
            "app_id": self.app_id,
            "model_type_id": self.model_type_id,
            "model_version": {"id": self.version_id},
        }

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, str]) -> TrainedEmbedderSource:
        return cls(**data)


def reference_text(model_id: str, user_id: str = "", app_id: str = "", version_id: str = "") -> str:
    """input_info.base_embed_model's fields as the one string train params and the web form
    carry: `[user/app/]model[@version]` (ids hold neither '/' nor '@')."""
    text = f"{user_id}/{app_id}/{model_id}" if user_id or app_id else model_id
    return f"{text}@{version_id}" if version_id else text


def _parse(text: str) -> tuple[str, str, str, str]:
    named, _, version_id = text.partition("@")
    parts = named.split("/")
    if len(parts) == 1 and parts[0]:
        return "", "", parts[0], version_id
    if len(parts) == 3 and parts[2]:
        return parts[0], parts[1], parts[2], version_id
    raise ApiError(
        codes.MODEL_INVALID_ARGUMENT,
        f"The base embed model {text!r} is not a model reference: give a built-in embedder "
        f"({_builtins()}), or a model id (user_id and app_id beside it for "
        "another app's), with model_version.id to choose a version.",
    )


def resolve_base_embedder(env: Env, app: AppScope, text: str) -> TrainedEmbedderSource | None:
    """The trained embedder that `text` (`reference_text`) names, checked and made known to this
    process; None for a built-in embedder or none. An empty user or app is the caller's own; no
    version means the model's newest trained one."""
    if not text:
        return None
    user_id, app_id, model_id, version_id = _parse(text)
    if model_id in embedder_ids() and not (user_id or app_id or version_id):
        return None
    owner = app
    if user_id or app_id:  # the key must be allowed to read that app
        principal = auth.Principal(app.user_pk, app.user_id, app.key_app_ids)
        owner = auth.resolve_app(env, principal, user_id, app_id or app.app_id)
    builtins = "" if user_id or app_id else f" The built-in embedders are {_builtins()}."
    with env.db.session() as session:
        model_type_id = session.scalar(
            select(Model.model_type_id).where(Model.app_pk == owner.app_pk, Model.id == model_id)
        )
    if model_type_id is None:
        raise ApiError(
            codes.MODEL_DOES_NOT_EXIST,
            f"The base embed model '{model_id}' does not exist in app '{owner.app_id}'.{builtins}",
        )
    if EMBEDDINGS_OUTPUT not in MODEL_TYPES[model_type_id].output_fields:
        embedders = sorted(
            i for i, t in MODEL_TYPES.items() if EMBEDDINGS_OUTPUT in t.output_fields
        )
        raise ApiError(
            codes.MODEL_INVALID_ARGUMENT,
            f"Model '{model_id}' of app '{owner.app_id}' is a {model_type_id} model, so it "
            f"cannot be a base embed model: choose a {' or '.join(embedders)} model, or a "
            f"built-in embedder ({_builtins()}).",
        )
    try:
        model, version = trained_version(env, owner, model_id, version_id)
    except ApiError as error:
        raise ApiError(
            error.code, f"The base embed model cannot be used: {error.description}"
        ) from None
    source = _source(owner, model, version)
    load_trained_embedder(env, source)
    return source


def _builtins() -> str:
    return ", ".join(embedder_ids())


def _source(owner: AppScope, model: Model, version: ModelVersion) -> TrainedEmbedderSource:
    assert version.artifacts_key is not None  # a trained version has its artifacts
    name = (version.train_info.get("params") or {}).get("template")
    template = find_template(model.model_type_id, name)
    assert template is not None, f"{model.model_type_id} has no template {name!r}"
    return TrainedEmbedderSource(
        owner.user_id,
        owner.app_id,
        model.id,
        version.id,
        model.model_type_id,
        template.name,
        version.artifacts_key,
    )


def load_trained_embedder(env: Env, source: TrainedEmbedderSource) -> Embedder:
    """Makes the trained embedder known to this process by its scoped id; its weights load on
    first use, from the blob store, by its template's predictor (as predictions load it)."""
    template = find_template(source.model_type_id, source.template)
    if template is None:  # checked when chosen; a server downgrade
        raise ApiError(
            codes.MODEL_INVALID_ARGUMENT,
            f"This server has no {source.model_type_id} template {source.template!r} to load "
            f"the base embed model {source.embedder_id}.",
        )
    return register_embedder(
        TrainedEmbedder(
            source.embedder_id,
            source.artifacts_key,
            template.input_kind,
            lambda: template.load(local_artifacts(env, source.artifacts_key)),
        )
    )


def load_base_embedder(env: Env, version: ModelVersion) -> None:
    """Before a version's predictor loads: makes the trained embedder it was trained on (if it
    was) known to this process. Its use was checked when the training started."""
    reference = (version.input_info or {}).get(INPUT_INFO_KEY) or {}
    if not reference.get("app_id"):
        return  # a built-in embedder, or none
    user_id, app_id = reference["user_id"], reference["app_id"]
    with env.db.session() as session:
        row = session.execute(
            select(User.pk, App.pk)
            .join(App, App.user_pk == User.pk)
            .where(User.id == user_id, App.id == app_id)
        ).first()
    if row is None:
        raise ApiError(
            codes.MODEL_DOES_NOT_EXIST,
            f"This version was trained on the embeddings of model '{reference['id']}' of app "
            f"'{app_id}', which no longer exists; train a new version on another base model.",
        )
    owner = AppScope(row[0], user_id, row[1], app_id)
    model, trained = trained_version(
        env, owner, reference["id"], (reference.get("model_version") or {}).get("id", "")
    )
    load_trained_embedder(env, _source(owner, model, trained))


def trained_embedder_choices(env: Env, app: AppScope) -> list[tuple[str, str]]:
    """This app's trained embedder models, newest trained version each, as (reference, label):
    what the web training form offers beside the built-in embedders."""
    types = [i for i, info in MODEL_TYPES.items() if EMBEDDINGS_OUTPUT in info.output_fields]
    with env.db.session() as session:
        rows = session.execute(
            select(Model.id, ModelVersion.id)
            .join(ModelVersion, ModelVersion.model_pk == Model.pk)
            .where(
                Model.app_pk == app.app_pk,
                Model.model_type_id.in_(types),
                ModelVersion.status_code == codes.MODEL_TRAINED,
            )
            .order_by(Model.id, ModelVersion.pk.desc())
        )
        newest: dict[str, str] = {}
        for model_id, version_id in rows:
            newest.setdefault(model_id, version_id)
    return [
        (reference_text(model_id, version_id=version_id), f"{model_id} (version {version_id})")
        for model_id, version_id in newest.items()
    ]


def resolve_embedder_version(env: Env, app: AppScope, version_id: str) -> TrainedEmbedderSource:
    """The trained embedder whose version id a search names (a rank's
    annotation.embed_model_version_id), a model of this app, checked as a base model is."""
    with env.db.session() as session:
        model_id = session.scalar(
            select(Model.id)
            .join(ModelVersion, ModelVersion.model_pk == Model.pk)
            .where(Model.app_pk == app.app_pk, ModelVersion.id == version_id)
        )
    if model_id is None:
        raise ApiError(
            codes.MODEL_DOES_NOT_EXIST,
            f"No model of app '{app.app_id}' has a version '{version_id}' to embed with "
            "(embed_model_version_id).",
        )
    source = resolve_base_embedder(env, app, reference_text(model_id, version_id=version_id))
    assert source is not None  # a version was named, so it is no built-in
    return source
