"""Starting a training: check the request against the model type and template, freeze the data,
create the version in MODEL_QUEUED_FOR_TRAINING and its job. Also cancelling one."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from pydantic import BaseModel, ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelmill.domain import model_versions as lifecycle
from modelmill.domain.errors import ApiError
from modelmill.domain.ids import new_id
from modelmill.services import AppScope, Env, logs
from modelmill.services.datasets import find_dataset, freeze, load_snapshot, snapshot_rows
from modelmill.services.datasets import find_version as find_dataset_version
from modelmill.services.embedders import (
    BASE_EMBEDDER,
    INPUT_INFO_KEY,
    TrainedEmbedderSource,
    resolve_base_embedder,
)
from modelmill.services.examples import from_snapshot
from modelmill.services.models import find_model, find_version
from modelmill.store import queue
from modelmill.store.tables import Concept, Dataset, Job, Model, ModelVersion, utcnow
from modelmill.training.contract import DataError, Task, Template
from modelmill.training.estimator import EMBEDDER_PARAM
from modelmill.training.registry import (
    COMMON_TRAIN_PARAMS,
    DEFAULT_INVALID_DATA_TOLERANCE_PERCENT,
    MAX_TRAINING_MINUTES,
    MODEL_TYPES,
    TEMPLATES,
    find_template,
    param_path,
    recommended_template,
    task_of,
    templates_of,
)
from modelmill.training.runner import TrainingPlan

SECONDS_PER_MINUTE = 60

TOLERANCE = "invalid_data_tolerance_percent"
NUM_GPUS = "num_gpus"  # above 1: the Ray executor trains on that many Ray Train workers
# Keys of a training job's payload: the plan the runner follows, and the version to start from.
PLAN = "plan"
RESUME_FROM_VERSION = "resume_from_version_pk"


@dataclass
class TrainRequest:
    """The parts of PostModelVersions that shape a training, as plain values."""

    train_params: dict[str, Any] = field(default_factory=dict)
    inference_params: dict[str, Any] = field(default_factory=dict)
    output_config: dict[str, Any] = field(default_factory=dict)
    concepts: list[str] = field(default_factory=list)
    base_embed_model: str = ""  # services.embedders.reference_text: a built-in's id or a model
    resume_from: tuple[str, str] | None = None  # (model id, version id)
    description: str = ""


def _invalid(description: str, details: str = "") -> ApiError:
    return ApiError(codes.MODEL_TRAINING_INVALID_PARAMS, description, details)


def _number(value: Any, name: str, meaning: str) -> float | None:
    """A numeric train param as a float (None when absent or empty); anything else is refused
    naming the field, never a bare conversion error."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _invalid(f"{name} is {value!r}; give {meaning} as a number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _invalid(f"{name} is {value!r}; give {meaning} as a number.") from None
    if not math.isfinite(number):
        raise _invalid(f"{name} is {value!r}; give {meaning} as a finite number.")
    return number


def resolve_template(model_type_id: str, name: str) -> Template:
    """The named template of a model type; with no name, its recommended one (what the web
    form preselects and a person pressing Train gets)."""
    if not name:
        name = recommended_template(model_type_id) or ""
    template = find_template(model_type_id, name or None)
    if template is not None:
        return template
    known = [t.name for t in templates_of(model_type_id)]
    if not known:  # a listed type whose templates are not built yet: say so, not "one of ."
        trainable = sorted({t.model_type_id for t in TEMPLATES})
        raise _invalid(
            f"modelmill has no {model_type_id} templates yet, so it cannot train this model"
            f"{f' (template {name!r})' if name else ''}; it trains {', '.join(trainable)} models."
        )
    raise _invalid(
        f"Template '{name}' is not one of the {model_type_id} templates: {', '.join(known)}."
    )


def build_params(template: Template, model: Model, request: TrainRequest) -> BaseModel:
    """The template's Params from the request, over the model's defaults, over Params defaults."""
    by_path: dict[str, dict[str, Any]] = {
        "train_info.params": request.train_params,
        "output_info.params": {
            **(model.output_info.get("params") or {}),
            **request.inference_params,
        },
        "output_info.output_config": {
            **(model.output_info.get("output_config") or {}),
            **request.output_config,
        },
        "input_info": {"base_embed_model": request.base_embed_model}
        if request.base_embed_model
        else {},
    }
    values: dict[str, Any] = {}
    for name, info in template.Params.model_fields.items():
        # pydantic reserves some names (model_config): the API's is the alias
        key = info.alias or name
        source = by_path.get(param_path(info), {})
        if key in source:
            values[key] = source[key]
        elif key in request.train_params:
            # The clarifai SDK sends every template field in train_info.params, whatever its path.
            values[key] = request.train_params[key]
    unknown = sorted(set(request.train_params) - set(values))
    if unknown:
        known = [
            info.alias or n
            for n, info in template.Params.model_fields.items()
            if param_path(info) == "train_info.params"
        ]
        raise _invalid(
            f"Unknown training parameters for template '{template.name}': {', '.join(unknown)}.",
            f"Known: {', '.join(known)}.",
        )
    for name, info in template.Params.model_fields.items():
        key = info.alias or name
        # Struct numbers arrive as floats (num_epochs: 30.0); accept whole floats for int fields.
        if (
            info.annotation is int
            and isinstance(values.get(key), float)
            and values[key].is_integer()
        ):
            values[key] = int(values[key])
    try:
        return template.Params.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise _invalid(f"Invalid parameters for template '{template.name}': {problems}.") from None


def resolve_base_embed_model(
    env: Env, app: AppScope, template: Template, request: TrainRequest
) -> tuple[TrainRequest, TrainedEmbedderSource | None]:
    """The request with the trained embedder its base_embed_model names (in input_info, or in
    the train params, where the clarifai SDK sends every field) replaced by that embedder's
    scoped id, now known to this process; the request as it is for a built-in one or none."""
    if EMBEDDER_PARAM not in template.Params.model_fields:
        return request, None
    named = request.base_embed_model or str(request.train_params.get(EMBEDDER_PARAM) or "")
    source = resolve_base_embedder(env, app, named)
    if source is None:
        return request, None
    params = {k: v for k, v in request.train_params.items() if k != EMBEDDER_PARAM}
    return replace(request, base_embed_model=source.embedder_id, train_params=params), source


def _relevant_snapshot(
    env: Env, session: Session, app: AppScope, task: Task, concepts: list[str]
) -> list[dict[str, Any]]:
    """Every app input the task would train on (for classifiers: labelled with a concept)."""
    rows = snapshot_rows(session, None, app_pk=app.app_pk)
    return [row for row in rows if task.relevant(from_snapshot(env, row, concepts), concepts)]


def count_training_inputs(env: Env, app: AppScope, model_id: str, concepts: list[str]) -> int:
    """How many inputs PostModelVersions would freeze for `concepts` when no dataset is given
    (the same selection: the model type's task says which inputs it trains on)."""
    with env.db.session() as session:
        model = find_model(session, app, model_id)
        task = task_of(model.model_type_id)
        return len(_relevant_snapshot(env, session, app, task, concepts))


def _auto_dataset(session: Session, app: AppScope, model: Model) -> Dataset:
    dataset_id = f"{model.id}-training-data"
    dataset = session.scalar(
        select(Dataset).where(Dataset.app_pk == app.app_pk, Dataset.id == dataset_id)
    )
    if dataset is None:
        dataset = Dataset(
            app_pk=app.app_pk,
            id=dataset_id,
            description=f"Inputs labelled with the concepts of model '{model.id}', "
            "frozen per training.",
        )
        session.add(dataset)
        session.flush()
    return dataset


def create_version(
    env: Env, app: AppScope, model_id: str, request: TrainRequest
) -> tuple[Model, ModelVersion]:
    """PostModelVersions: everything is checked before anything is written or queued."""
    params = dict(request.train_params)
    template_name = str(params.pop("template", "") or "")
    dataset_id = str(params.pop("dataset_id", "") or "")
    dataset_version_id = str(params.pop("dataset_version_id", "") or "")
    tolerance = _number(params.pop(TOLERANCE, None), TOLERANCE, "a percentage from 0 to 100")
    cap_minutes = _number(params.pop(MAX_TRAINING_MINUTES, None), MAX_TRAINING_MINUTES, "minutes")
    gpus = _number(params.get(NUM_GPUS), NUM_GPUS, "a whole number of GPUs")
    tolerance = DEFAULT_INVALID_DATA_TOLERANCE_PERCENT if tolerance is None else tolerance
    cap_minutes = cap_minutes or 0.0
    extras = {k: params[k] for k in COMMON_TRAIN_PARAMS if k in params}
    if gpus is not None and (gpus < 0 or gpus != int(gpus)):
        raise _invalid(f"{NUM_GPUS} is {gpus:g}; give a whole number of GPUs, 0 or more.")
    if not 0 <= tolerance <= 100:
        raise _invalid(f"{TOLERANCE} is {tolerance:g}; give a percentage from 0 to 100.")
    if cap_minutes < 0:
        raise _invalid(f"{MAX_TRAINING_MINUTES} is {cap_minutes:g}; give minutes, or 0 for no cap.")
    with env.db.session() as session:
        model = find_model(session, app, model_id)
        info = MODEL_TYPES[model.model_type_id]
        template = resolve_template(model.model_type_id, template_name)
        task = task_of(model.model_type_id)
        if cap_minutes and not info.uses_template:
            raise _invalid(
                f"{info.title} models train in seconds and take no {MAX_TRAINING_MINUTES}; "
                "leave it out."
            )
        fields = {i.alias or n: i for n, i in template.Params.model_fields.items()}
        for key in extras:
            if key not in fields:  # a template with its own `seed` takes it as a hyperparameter
                params.pop(key)
        request, base_embedder = resolve_base_embed_model(
            env, app, template, replace(request, train_params=params)
        )
        params_model = build_params(template, model, request)
        concepts = request.concepts or [
            c["id"] for c in (model.output_info.get("data") or {}).get("concepts", [])
        ]
        concepts = list(dict.fromkeys(concepts))
        if info.predicts_concepts and not concepts:
            raise ApiError(
                codes.MODEL_INVALID_ARGUMENT,
                "Choose the concepts this version should predict (output_info.data.concepts).",
            )
        known = set(
            session.scalars(
                select(Concept.id).where(Concept.app_pk == app.app_pk, Concept.id.in_(concepts))
            )
        )
        unknown = [c for c in concepts if c not in known]
        if unknown:
            raise ApiError(
                codes.MODEL_INVALID_ARGUMENT,
                f"Concepts {', '.join(unknown)} do not exist in app '{app.app_id}'.",
            )
        exclusive = bool(getattr(params_model, "concepts_mutually_exclusive", False))
        try:
            template.check_params(params_model, env.settings.resolved_weights_dir)
        except DataError as error:
            raise ApiError(error.code, error.description) from None
        resume_pk = None
        if request.resume_from is not None:
            resume_pk = _resume_source(session, app, request.resume_from, template)

        if dataset_version_id and not dataset_id:
            raise ApiError(
                codes.CONN_INVALID_REQUEST, "dataset_version_id needs dataset_id beside it."
            )
        if dataset_id and dataset_version_id:
            version = find_dataset_version(session, app, dataset_id, dataset_version_id)
            snapshot = load_snapshot(env, version)
            dataset = session.get(Dataset, version.dataset_pk)
        elif dataset_id:
            dataset = find_dataset(session, app, dataset_id)
            snapshot = snapshot_rows(session, None, dataset_pk=dataset.pk)
            version = None
        else:
            dataset = _auto_dataset(session, app, model)
            snapshot = _relevant_snapshot(env, session, app, task, concepts)
            version = None
        try:  # labels only: no input's content is read here
            task.check_data(
                [from_snapshot(env, r, concepts) for r in snapshot], concepts, exclusive
            )
        except DataError as error:
            raise ApiError(error.code, error.description) from None
        assert dataset is not None
        if version is None:
            version = freeze(env, session, dataset, "", "Frozen for training", snapshot)

        dumped = params_model.model_dump(mode="json", by_alias=True)
        train_params = {
            k: v for k, v in dumped.items() if param_path(fields[k]) == "train_info.params"
        }
        inference = {
            k: v for k, v in dumped.items() if param_path(fields[k]) == "output_info.params"
        }
        output_config = {
            k: v for k, v in dumped.items() if param_path(fields[k]) == "output_info.output_config"
        }
        row = ModelVersion(
            model_pk=model.pk,
            id=new_id(),
            status_code=lifecycle.QUEUED,
            status_description="Queued for training",
            description=request.description,
            train_info={
                "params": {
                    **({"template": template.name} if info.uses_template else {}),
                    **train_params,
                    **extras,
                    "dataset_id": dataset.id,
                    "dataset_version_id": version.id,
                    TOLERANCE: tolerance,
                    **({MAX_TRAINING_MINUTES: cap_minutes} if cap_minutes else {}),
                },
                "dataset": {"id": dataset.id, "version": {"id": version.id}},
                **(
                    {
                        "resume_from_model": {
                            "id": request.resume_from[0],
                            "model_version": {"id": request.resume_from[1]},
                        }
                    }
                    if request.resume_from
                    else {}
                ),
            },
            output_info={
                "data": {"concepts": [{"id": c} for c in concepts]},
                "output_config": output_config,
                "params": inference,
            },
            input_info={INPUT_INFO_KEY: base_embedder.reference()}
            if base_embedder
            else (
                {INPUT_INFO_KEY: {"id": dumped[EMBEDDER_PARAM]}}
                if dumped.get(EMBEDDER_PARAM)
                else {}
            ),
            dataset_version_pk=version.pk,
            progress={"percent": 0.0, "total_inputs": len(snapshot)},
        )
        session.add(row)
        session.flush()
        plan = TrainingPlan(
            model.model_type_id,
            template.name,
            concepts,
            exclusive,
            dumped,
            tolerance,
            cap_minutes * SECONDS_PER_MINUTE,
            int(gpus or 0),
        )
        queue.enqueue(
            session,
            "train",
            {
                PLAN: plan.to_json(),
                RESUME_FROM_VERSION: resume_pk,
                **({BASE_EMBEDDER: base_embedder.to_json()} if base_embedder else {}),
            },
            model_version_pk=row.pk,
            max_attempts=env.settings.job_max_attempts,
        )
    return model, row


def _resume_source(
    session: Session, app: AppScope, source: tuple[str, str], template: Template
) -> int:
    model = find_model(session, app, source[0])
    version = find_version(session, model, source[1])
    if version.status_code != lifecycle.TRAINED or not version.artifacts_key:
        raise ApiError(
            codes.MODEL_INVALID_ARGUMENT,
            f"Version '{version.id}' of model '{model.id}' is not trained, so there is no "
            "checkpoint to start from.",
        )
    previous = (version.train_info.get("params") or {}).get("template", template.name)
    if find_template(model.model_type_id, previous) is not template:
        raise ApiError(
            codes.MODEL_INVALID_ARGUMENT,
            f"Incremental training continues the same template; version '{version.id}' was "
            f"trained with '{previous}', not '{template.name}'.",
        )
    return version.pk


def cancel_version(env: Env, app: AppScope, model_id: str, version_id: str) -> ModelVersion:
    """Ask the training of a version to stop; a queued version fails at once."""
    with env.db.session() as session:
        model = find_model(session, app, model_id)
        version = find_version(session, model, version_id)
        if version.status_code in lifecycle.TERMINAL:
            raise ApiError(
                codes.MODEL_INVALID_ARGUMENT,
                f"Version '{version_id}' has already finished; there is nothing to cancel.",
            )
        session.execute(
            update(Job)
            .where(Job.model_version_pk == version.pk, Job.state.in_([queue.QUEUED, queue.RUNNING]))
            .values(cancel_requested=True)
        )
        if version.status_code == lifecycle.QUEUED:
            queued = session.scalar(
                select(Job).where(Job.model_version_pk == version.pk, Job.state == queue.QUEUED)
            )
            if queued is not None:
                queued.state = queue.CANCELLED
                queued.finished_at = utcnow()
                version.status_code = lifecycle.check_transition(
                    version.status_code, codes.MODEL_TRAINING_FAILED
                )
                version.status_description = "Training was cancelled by the user."
                version.completed_at = utcnow()
    return version


def train_log(env: Env, version_pk: int) -> bytes:
    """The log of a version's training, wherever its worker runs."""
    with env.db.session() as session:
        job = session.scalar(
            select(Job)
            .where(Job.model_version_pk == version_pk, Job.kind == "train")
            .order_by(Job.pk.desc())
            .limit(1)
        )
    if job is None:
        raise ApiError(codes.CONN_DOES_NOT_EXIST, "This version has no training log.")
    text = logs.read_log(env, job)  # the worker may be on another machine
    return b"Waiting for a worker to start this training.\n" if text is None else text


def model_of(env: Env, version: ModelVersion) -> tuple[ModelVersion, Model]:
    with env.db.session() as session:
        model = session.get(Model, version.model_pk)
    assert model is not None
    return version, model
