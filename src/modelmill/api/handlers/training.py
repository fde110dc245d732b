"""Training and its results: PostModelVersions, PostModelOutputs, evaluations, exports."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import json_format

from modelmill.api import convert
from modelmill.api.rpc import batch_status, rpc
from modelmill.domain.errors import ApiError
from modelmill.services import (
    embedders,
    evaluations,
    exports,
    models,
    predictions,
    queue_ahead,
    training,
)


def _struct(message, field: str) -> dict:  # type: ignore[no-untyped-def]
    return json_format.MessageToDict(getattr(message, field)) if message.HasField(field) else {}


def _inference_settings(model: pb.Model) -> tuple[dict, dict]:
    """The request's output_config and params from `model.output_info` and, where the SDK puts
    them, `model.model_version.output_info`; for each setting the version's wins, as on Clarifai."""
    output_config: dict = {}
    params: dict = {}
    for info in (model.output_info, model.model_version.output_info):
        output_config.update(
            {k: v for k, v in convert.output_config(info.output_config).items() if v}
        )
        params.update(_struct(info, "params"))
    return output_config, params


@rpc
def PostModelVersions(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    if len(request.model_versions) != 1:
        raise ApiError(codes.MODEL_INVALID_ARGUMENT, "Send exactly one model version to train.")
    version = request.model_versions[0]
    output_info, train_info = version.output_info, version.train_info
    inference = {
        **{k: v for k, v in convert.output_config(output_info.output_config).items() if v},
        **_struct(output_info, "params"),
    }
    output_config = (
        {"concepts_mutually_exclusive": output_info.output_config.concepts_mutually_exclusive}
        if output_info.HasField("output_config")
        else {}
    )
    base = version.input_info.base_embed_model
    resume = None
    if train_info.HasField("resume_from_model"):
        source = train_info.resume_from_model
        resume = (source.id or request.model_id, source.model_version.id)
    model, row = training.create_version(
        api.env,
        scope,
        request.model_id,
        training.TrainRequest(
            train_params=_struct(train_info, "params"),
            inference_params=inference,
            output_config=output_config,
            concepts=[c.id for c in output_info.data.concepts],
            base_embed_model=embedders.reference_text(
                base.id, base.user_id, base.app_id, base.model_version.id
            ),
            resume_from=resume,
            description=version.description or request.description,
        ),
    )
    row = queue_ahead.estimate_queued_version(api.env, row)
    return service.SingleModelResponse(model=convert.model(model, row, scope, api.links))


@rpc
def PostModelOutputs(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    output_config, params = _inference_settings(request.model)
    model, version, results = predictions.predict(
        api.env,
        api.predictors,
        scope,
        request.model_id,
        request.version_id or request.model.model_version.id,
        [convert.new_input(message) for message in request.inputs],
        output_config,
        params,
    )
    names = {c.id: c.name for c in models.model_concepts(api.env, scope, model.id, version.id)}
    outputs = []
    for message, result in zip(request.inputs, results, strict=True):
        echo = pb.Input(id=message.id)
        if isinstance(result, ApiError):
            outputs.append(
                pb.Output(input=echo, status=convert.status(result.code, result.description))
            )
        else:
            outputs.append(convert.output(result, echo, names))
    codes_ = [o.status.code for o in outputs]
    return service.MultiOutputResponse(
        status=batch_status(
            codes_,
            codes.SUCCESS,
            next((o.status.description for o in outputs if o.status.code != codes.SUCCESS), ""),
        ),
        outputs=outputs,
    )


def _evaluation(api, scope, row, model, version, fields=frozenset()):  # type: ignore[no-untyped-def]
    return convert.evaluation(row, model, version, scope, api.links, set(fields))


@rpc
def PostEvaluations(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    created = []
    for metrics in request.eval_metrics:
        truth = metrics.ground_truth_dataset
        created.append(
            evaluations.create_evaluation(
                api.env,
                scope,
                metrics.model.id,
                metrics.model.model_version.id,
                truth.id,
                truth.version.id,
                metrics.id,
            )
        )
    return service.MultiEvalMetricsResponse(
        eval_metrics=[_evaluation(api, scope, *item) for item in created]
    )


@rpc
def PostModelVersionEvaluations(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    created = [
        evaluations.create_evaluation(
            api.env,
            scope,
            request.model_id,
            request.model_version_id,
            m.ground_truth_dataset.id,
            m.ground_truth_dataset.version.id,
            m.id,
        )
        for m in request.eval_metrics
    ]
    return service.MultiEvalMetricsResponse(
        eval_metrics=[_evaluation(api, scope, *item) for item in created]
    )


def _fields(request) -> set[str]:  # type: ignore[no-untyped-def]
    return {f.name for f, value in request.fields.ListFields() if value}


@rpc
def GetEvaluation(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    item = evaluations.get_evaluation(api.env, scope, request.evaluation_id)
    return service.SingleEvalMetricsResponse(
        eval_metrics=_evaluation(api, scope, *item, _fields(request))
    )


@rpc
def GetModelVersionEvaluation(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    item = evaluations.get_evaluation(
        api.env, scope, request.evaluation_id, request.model_id, request.model_version_id
    )
    return service.SingleEvalMetricsResponse(
        eval_metrics=_evaluation(api, scope, *item, _fields(request))
    )


@rpc
def ListEvaluations(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = evaluations.list_evaluations(api.env, scope, api.page(request))
    return service.MultiEvalMetricsResponse(
        eval_metrics=[_evaluation(api, scope, *r) for r in rows]
    )


@rpc
def ListModelVersionEvaluations(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = evaluations.list_evaluations(
        api.env, scope, api.page(request), request.model_id, request.model_version_id
    )
    return service.MultiEvalMetricsResponse(
        eval_metrics=[_evaluation(api, scope, *r) for r in rows]
    )


@rpc
def PutModelVersionExports(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    row = exports.request_export(api.env, scope, request.model_id, request.version_id)
    return service.SingleModelVersionExportResponse(export=convert.export(row, api.links))


@rpc
def GetModelVersionExport(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    row = exports.get_export(api.env, scope, request.model_id, request.version_id)
    return service.SingleModelVersionExportResponse(export=convert.export(row, api.links))
