"""Training time estimates before training.

An estimate is the template's cost model on the hardware that trains (fitted to the calibration
shipped for it or run here, plus every finished training: `training_runs` records them), shown
as the seed describes: rounded down to 15-minute steps, with a cost at an hourly price and the
peak memory beside it. `queue_ahead` adds the wait for the trainings ahead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelmill.domain.errors import ApiError
from modelmill.services import AppScope, Env
from modelmill.services.datasets import find_dataset, load_snapshot, snapshot_rows
from modelmill.services.datasets import find_version as find_dataset_version
from modelmill.services.embeddings import count_missing
from modelmill.services.examples import chat_messages, content_key, target_text
from modelmill.services.models import find_model
from modelmill.services.training import (
    TOLERANCE,
    TrainRequest,
    build_params,
    resolve_base_embed_model,
    resolve_template,
)
from modelmill.store.tables import (
    Dataset,
    DatasetVersion,
    Input,
    TrainingRun,
)
from modelmill.training.contract import DataError, Hardware, InputKind, Template
from modelmill.training.estimator import (
    DEFAULT_CHARS,
    DEFAULT_MEGAPIXELS,
    EMBEDDER_PARAM,
    EPOCH_PARAMS,
    CostModel,
    DataStats,
    Run,
    find_param,
    fit,
    input_kinds,
    model_key,
    prompt_tokens_of,
    shipped_runs,
    text_chars,
    workload_of,
)
from modelmill.training.hardware import resolve_device, this_hardware
from modelmill.training.registry import COMMON_TRAIN_PARAMS
from modelmill.training.waits import RECENT_WAITS, JobCosts, Wait, fit_job_costs, wait_parts

STEP_S = 15 * 60
PRICE_PER_HOUR_USD = 4.0  # the seed's price; a server's is settings.price_per_hour_usd
RECENT_RUNS = 500  # newest measured trainings a fit uses, so old software and data age out
BYTES_PER_GB = 1e9
CALIBRATION, TRAINING = "calibration", "training"
PART_SHOWN_S = 0.5  # parts of an estimate shorter than this are left out of its breakdown
WAIT = "wait"  # TrainingRun.source of a finished training's whole wait in parts (waits.Wait)

__all__ = [
    "Estimate",
    "display_cost",
    "display_duration",
    "display_memory",
    "estimate_job",
    "estimate_training",
    "estimate_workload",
    "round_down_15",
    "this_hardware",
]


@dataclass(frozen=True)
class Estimate:
    seconds: float  # expected wall-clock training time on the hardware that trains
    display: str  # rounded down to 15-minute steps, e.g. "1 h 15 min" or "under 15 min"
    cost: str  # at the hourly price, e.g. "$5.00"
    peak_memory_bytes: int | None  # peak RAM of the training process
    hardware: str  # the hardware profile the estimate is for
    input_count: int
    peak_gpu_memory_bytes: int | None = None  # on a GPU: peak memory torch allocates there
    memory: str = ""  # "peak RAM 1.2 GB" (and GPU memory on a GPU), "" when unknown
    basis: str = ""  # how the figure was made, for a person
    # Seconds of each part of the wait on an idle server (waits.PARTS),
    # those of PART_SHOWN_S or more; `seconds` is the sum of all of them.
    parts: dict[str, float] = field(default_factory=dict)
    jobs_ahead: int = 0  # trainings queued or running ahead of this one
    starts_in_s: float = 0.0  # when a worker should take it, from the estimates of those


# ---- display helpers, shared by the web UI and the CLI ---------------------------------------


def round_down_15(seconds: float) -> int:
    """Seconds rounded down to a whole number of 15-minute steps.

    >>> round_down_15(899), round_down_15(900), round_down_15(4499)
    (0, 900, 3600)
    """
    return int(max(seconds, 0) // STEP_S) * STEP_S


def display_duration(seconds: float) -> str:
    """'under 15 min', '45 min', '2 h', '1 h 15 min': rounded down to 15-minute steps."""
    rounded = round_down_15(seconds)
    if rounded == 0:
        return "under 15 min"
    hours, minutes = divmod(rounded // 60, 60)
    parts = ([f"{hours} h"] if hours else []) + ([f"{minutes} min"] if minutes else [])
    return " ".join(parts)


def display_cost(seconds: float, price_per_hour: float = PRICE_PER_HOUR_USD) -> str:
    """The price of the time itself (not of its rounded display): '$4.00' for an hour at $4."""
    return f"${max(seconds, 0) / 3600 * price_per_hour:,.2f}"


def display_memory(ram_bytes: int | None, gpu_bytes: int | None = None) -> str:
    """'peak RAM 1.2 GB', with ', GPU 3.4 GB' on a GPU; '' when neither is known."""
    parts = []
    if ram_bytes:
        parts.append(f"peak RAM {ram_bytes / BYTES_PER_GB:.1f} GB")
    if gpu_bytes:
        parts.append(f"GPU {gpu_bytes / BYTES_PER_GB:.1f} GB")
    return ", ".join(parts)


# ---- what the data looks like --------------------------------------------------------------


def kind_trained_on(template: Template, params: BaseModel, counts: Counter[str]) -> InputKind:
    """The kind of inputs a training learns from: the template's own; for a template that
    follows its base embedder, the chosen embedder's or else the kind most of the data has."""
    kinds = input_kinds(template)
    if len(kinds) == 1:
        return kinds[0]
    if embedder_id := getattr(params, "base_embed_model", ""):
        from modelmill.training.embedders import get_embedder

        return get_embedder(embedder_id).input_kind
    return max(kinds, key=lambda kind: counts.get(kind, 0))  # ties: the first, its own


def snapshot_stats(snapshot: Sequence[dict[str, Any]], kind: InputKind) -> DataStats:
    """Count and mean stored size of the inputs of `kind` in a dataset snapshot."""
    items = [item for item in snapshot if item["kind"] == kind]
    if kind == "image":
        pixels = [item["width"] * item["height"] for item in items if item.get("width")]
        mean = sum(pixels) / len(pixels) / 1e6 if pixels else DEFAULT_MEGAPIXELS
        return DataStats(len(items), kind, mean_megapixels=mean)
    chars = [
        text_chars(item.get("text") or "", target_text(item), chat_messages(item)) for item in items
    ]
    return DataStats(
        len(items), kind, mean_chars=sum(chars) / len(chars) if chars else DEFAULT_CHARS
    )


def _app_stats(session: Session, app_pk: int, num_inputs: int, kind: InputKind) -> DataStats:
    """DataStats for `num_inputs` inputs like the app's own (what a training without a dataset
    learns from); the defaults when the app has none of that kind yet."""
    of_kind = (Input.app_pk == app_pk, Input.kind == kind)
    if kind == "image":
        mean = session.scalar(select(func.avg(Input.width * Input.height)).where(*of_kind))
        return DataStats(
            num_inputs, kind, mean_megapixels=float(mean) / 1e6 if mean else DEFAULT_MEGAPIXELS
        )
    mean = session.scalar(select(func.avg(func.length(Input.text))).where(*of_kind))
    return DataStats(num_inputs, kind, mean_chars=float(mean) if mean else DEFAULT_CHARS)


def _app_kinds(session: Session, app_pk: int) -> Counter[str]:
    rows = session.execute(
        select(Input.kind, func.count()).where(Input.app_pk == app_pk).group_by(Input.kind)
    )
    return Counter({kind: count for kind, count in rows})


def _find_version_by_id(session: Session, app: AppScope, version_id: str) -> DatasetVersion:
    """A dataset version named by its id alone (the seed's examples send no dataset_id)."""
    rows = list(
        session.scalars(
            select(DatasetVersion)
            .join(Dataset, Dataset.pk == DatasetVersion.dataset_pk)
            .where(Dataset.app_pk == app.app_pk, DatasetVersion.id == version_id)
        )
    )
    if not rows:
        raise ApiError(
            codes.CONN_DOES_NOT_EXIST,
            f"No dataset of app '{app.app_id}' has a version '{version_id}'.",
        )
    if len(rows) > 1:
        raise ApiError(
            codes.CONN_INVALID_REQUEST,
            f"Several datasets have a version '{version_id}'; send dataset_id too.",
        )
    return rows[0]


# ---- the hardware that trains and its cost models -------------------------------------------


def training_hardware(env: Env) -> Hardware:
    """The hardware of the newest finished training (workers may run elsewhere than this API
    server); this machine with the configured device until there is one."""
    with env.db.session() as session:
        hardware = session.scalar(
            select(TrainingRun.hardware)
            .where(TrainingRun.source == TRAINING)
            .order_by(TrainingRun.pk.desc())
            .limit(1)
        )
    if hardware:
        return Hardware(**hardware)
    return this_hardware(resolve_device(env.settings.device))


def runs_for(env: Env, key: str, profile: str) -> list[Run]:
    """What the cost model of `key` on `profile` is fitted to: the runs measured here, plus the
    shipped calibration unless this server ran its own calibration (which replaces it)."""
    with env.db.session() as session:
        rows = list(
            session.execute(
                select(TrainingRun.source, TrainingRun.run)
                .where(
                    TrainingRun.model_key == key,
                    TrainingRun.hardware_profile == profile,
                    TrainingRun.source != WAIT,
                )
                .order_by(TrainingRun.pk.desc())
                .limit(RECENT_RUNS)
            )
        )
    measured = [Run.from_json(run) for _, run in reversed(rows)]
    if any(source == CALIBRATION for source, _ in rows):
        return measured
    return shipped_runs(profile).get(key, []) + measured


def cost_model(
    env: Env, template: Template, kind: InputKind, hardware: Hardware
) -> CostModel | None:
    return fit(runs_for(env, model_key(template, kind), hardware.profile))


def job_costs(
    env: Env, template: Template, kind: InputKind, hardware: Hardware, model: CostModel | None
) -> JobCosts:
    """The job's own start-up, end and embedding rate, fitted to the newest finished trainings'
    whole waits against `model`; modelmill's defaults before any."""
    with env.db.session() as session:
        rows = session.scalars(
            select(TrainingRun.run)
            .where(
                TrainingRun.model_key == model_key(template, kind),
                TrainingRun.hardware_profile == hardware.profile,
                TrainingRun.source == WAIT,
            )
            .order_by(TrainingRun.pk.desc())
            .limit(RECENT_WAITS)
        )
        waits = [Wait.from_json(run) for run in rows]
    return fit_job_costs(waits, model)


def embedder_of(template: Template, kind: InputKind, params: BaseModel) -> str | None:
    """The base embedder a transfer-learning template reads inputs of `kind` with; None for a
    template that embeds nothing (it trains on the inputs themselves)."""
    if EMBEDDER_PARAM not in template.Params.model_fields:
        return None
    from modelmill.training.embedders import default_embedder

    return str(getattr(params, EMBEDDER_PARAM, "") or default_embedder(kind).id)


# ---- estimating ------------------------------------------------------------------------------


def estimate_training(
    env: Env,
    app: AppScope,
    model_id: str,
    train_params: dict[str, Any],
    input_count: int | None = None,
) -> Estimate:
    """Estimate a training as PostModelVersions would run it (same params, same data).

    The data is the dataset version in the params (dataset_version_id, with or without
    dataset_id: its real count and sizes), else the dataset's current inputs (dataset_id),
    else `input_count` inputs like the app's own.
    """
    params = dict(train_params)
    template_name = str(params.pop("template", "") or "")
    dataset_id = str(params.pop("dataset_id", "") or "")
    dataset_version_id = str(params.pop("dataset_version_id", "") or "")
    for key in (*COMMON_TRAIN_PARAMS, TOLERANCE):
        params.pop(key, None)
    with env.db.session() as session:
        model = find_model(session, app, model_id)
        template = resolve_template(model.model_type_id, template_name)
        request, _ = resolve_base_embed_model(env, app, template, TrainRequest(train_params=params))
        params_model = build_params(template, model, request)
        snapshot = _snapshot(env, session, app, dataset_id, dataset_version_id)
        if snapshot is not None:
            kind = kind_trained_on(template, params_model, Counter(i["kind"] for i in snapshot))
            stats = snapshot_stats(snapshot, kind)
            embedder = embedder_of(template, kind, params_model)
            missing = _missing(env, snapshot, kind, embedder) if embedder else None
        elif input_count is not None:
            kind = kind_trained_on(template, params_model, _app_kinds(session, app.app_pk))
            stats = _app_stats(session, app.app_pk, input_count, kind)
            embedder = embedder_of(template, kind, params_model)
            missing = None
            if embedder:  # the share of the app's inputs not cached yet
                keys = _app_content_keys(session, app.app_pk, kind)
                share = count_missing(env, keys, embedder) / len(keys) if keys else 1.0
                missing = round(input_count * share)
        else:
            raise ApiError(
                codes.MODEL_INVALID_ARGUMENT,
                "Give estimated_input_count, or the dataset to train on (dataset_version_id, "
                "with dataset_id if several datasets have that version id).",
            )
    try:  # params that pass their fields' checks and still cannot train (a template's own)
        return estimate_workload(env, template, kind, params_model, stats, missing=missing)
    except DataError as error:
        raise ApiError(error.code, error.description) from None


def _missing(env: Env, snapshot: Sequence[dict[str, Any]], kind: InputKind, embedder: str) -> int:
    keys = [content_key(item) for item in snapshot if item["kind"] == kind]
    return count_missing(env, keys, embedder)


def _app_content_keys(session: Session, app_pk: int, kind: InputKind) -> list[str]:
    rows = session.execute(
        select(Input.blob_key, Input.text).where(Input.app_pk == app_pk, Input.kind == kind)
    )
    return [content_key({"blob_key": blob_key, "text": text}) for blob_key, text in rows]


def estimate_workload(
    env: Env,
    template: Template,
    kind: InputKind,
    params: BaseModel,
    stats: DataStats,
    hardware: Hardware | None = None,
    missing: int | None = None,
) -> Estimate:
    """How long training `template` with `params` on data like `stats` takes on `hardware`
    (default: the hardware that trains), from pressing Train on an idle server to trained: the
    fitted cost model of the training and the job's own costs around it, or the template's
    rule of thumb before any run. `missing`: inputs whose embeddings are not cached (default
    all) for a template that embeds them."""
    hardware = hardware or training_hardware(env)
    model_fit = cost_model(env, template, kind, hardware)
    values = params.model_dump(mode="json")
    workload = workload_of(values, stats, prompt_tokens=prompt_tokens_of(template, values))
    embedding_inputs = stats.num_inputs if embedder_of(template, kind, params) else 0
    missing = embedding_inputs if missing is None else min(missing, embedding_inputs)
    parts: dict[str, float] = {}
    if model_fit is not None:
        costs = job_costs(env, template, kind, hardware, model_fit)
        parts = wait_parts(model_fit, costs, workload, embedding_inputs, missing)
        seconds = sum(parts.values())
        ram = model_fit.peak_memory_bytes(workload)
        gpu = model_fit.peak_gpu_memory_bytes(workload) if hardware.device == "cuda" else None
        basis = (
            f"fitted to {model_fit.runs} measured trainings of {template.name} on "
            f"{hardware.profile} (mean error {model_fit.error:.0%}); the job's start-up and end "
            + (
                f"from {costs.trainings} finished trainings here"
                if costs.trainings
                else "as measured on modelmill's CI machines until a training finishes here"
            )
        )
        if embedding_inputs:
            basis += (
                f"; {embedding_inputs - missing} of {embedding_inputs} inputs' embeddings cached"
            )
        if find_param(values, EPOCH_PARAMS)[0]:
            basis += "; for all epochs: early stopping can end training sooner"
    else:
        seconds = template.estimate(stats.num_inputs, params, hardware)
        ram = gpu = None
        basis = (
            f"{template.name}'s rule of thumb: no trainings measured on {hardware.profile} "
            "yet (`modelmill calibrate` measures some)"
        )
    seconds = float(round(seconds))  # whole seconds, as the seed's int(round(...))
    return Estimate(
        seconds,
        display_duration(seconds),
        display_cost(seconds, env.settings.price_per_hour_usd),
        ram,
        hardware.profile,
        stats.num_inputs,
        gpu,
        display_memory(ram, gpu),
        basis,
        {part: round(value, 1) for part, value in parts.items() if value >= PART_SHOWN_S},
    )


def _snapshot(
    env: Env, session: Session, app: AppScope, dataset_id: str, version_id: str
) -> list[dict[str, Any]] | None:
    if version_id:
        version = (
            find_dataset_version(session, app, dataset_id, version_id)
            if dataset_id
            else _find_version_by_id(session, app, version_id)
        )
        return load_snapshot(env, version)
    if dataset_id:
        return snapshot_rows(session, None, dataset_pk=find_dataset(session, app, dataset_id).pk)
    return None


def estimate_job(
    env: Env,
    template: Template,
    params: BaseModel,
    snapshot: Sequence[dict[str, Any]],
    device: str | None = None,
) -> Estimate:
    """The estimate of a training a worker is about to run, on the data it has, on its own
    hardware (`device`; None: the hardware that trains), with the embedding cache as it is
    now: what the version shows beside the actual time once trained."""
    kind = kind_trained_on(template, params, Counter(i["kind"] for i in snapshot))
    embedder = embedder_of(template, kind, params)
    return estimate_workload(
        env,
        template,
        kind,
        params,
        snapshot_stats(snapshot, kind),
        this_hardware(device) if device else None,
        _missing(env, snapshot, kind, embedder) if embedder else None,
    )
