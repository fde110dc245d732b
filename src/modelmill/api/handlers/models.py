"""Models, model versions as records, and model types."""

from __future__ import annotations

from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from clarifai_grpc.grpc.api.status import status_pb2

from modelmill.api import convert
from modelmill.api.rpc import rpc
from modelmill.domain.errors import ApiError
from modelmill.services import models, workflows
from modelmill.training.registry import model_type_specs


def _model(api, scope, row, version):  # type: ignore[no-untyped-def]
    return convert.model(row, version, scope, api.links)


@rpc
def PostModels(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    message = request.model if request.HasField("model") else (request.models or [None])[0]
    if message is None:
        raise ApiError(codes.MODEL_INVALID_ARGUMENT, "Send the model to create in 'model'.")
    row = models.create_model(
        api.env,
        scope,
        message.id,
        message.model_type_id,
        message.name,
        message.description,
        convert.to_dict(message.output_info),
    )
    return service.SingleModelResponse(model=_model(api, scope, row, None))


@rpc
def GetModel(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    try:
        row, version = models.get_model(api.env, scope, request.model_id, request.version_id)
    except ApiError as error:
        # The base embedding models are models of every app (workflow nodes name them).
        base = workflows.base_embed_model(request.model_id)
        if (
            error.code != codes.MODEL_DOES_NOT_EXIST
            or base is None
            or (request.version_id not in ("", base.version_id))
        ):
            raise
        return service.SingleModelResponse(model=convert.base_model(base, scope))
    return service.SingleModelResponse(model=_model(api, scope, row, version))


GetModelOutputInfo = rpc(GetModel.__wrapped__)  # type: ignore[attr-defined]
GetModelOutputInfo.__name__ = "GetModelOutputInfo"


@rpc
def ListModels(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = models.list_models(api.env, scope, api.page(request), request.model_type_id)
    return service.MultiModelResponse(models=[_model(api, scope, m, v) for m, v in rows])


@rpc
def PatchModels(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    patches = [
        {
            "id": m.id,
            "name": m.name,
            "description": m.description,
            "output_info": convert.to_dict(m.output_info),
        }
        for m in request.models
    ]
    rows = models.patch_models(api.env, scope, patches, request.action or "merge")
    return service.MultiModelResponse(models=[_model(api, scope, r, None) for r in rows])


@rpc
def DeleteModel(api, request, principal):  # type: ignore[no-untyped-def]
    models.delete_models(api.env, api.scope(request.user_app_id, principal), [request.model_id])
    return status_pb2.BaseResponse()


@rpc
def DeleteModels(api, request, principal):  # type: ignore[no-untyped-def]
    models.delete_models(api.env, api.scope(request.user_app_id, principal), list(request.ids))
    return status_pb2.BaseResponse()


@rpc
def ListModelConcepts(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = models.model_concepts(api.env, scope, request.model_id, request.version_id)
    return service.MultiConceptResponse(concepts=[convert.concept(r, scope) for r in rows])


@rpc
def ListModelTypes(api, request, principal):  # type: ignore[no-untyped-def]
    page = api.page(request)
    specs = model_type_specs()[(page.page - 1) * page.per_page : page.page * page.per_page]
    return service.MultiModelTypeResponse(model_types=[convert.model_type(s) for s in specs])


@rpc
def GetModelType(api, request, principal):  # type: ignore[no-untyped-def]
    for spec in model_type_specs():
        if spec.info.id == request.model_type_id:
            return service.SingleModelTypeResponse(model_type=convert.model_type(spec))
    raise ApiError(
        codes.MODEL_INVALID_ARGUMENT,
        f"Model type '{request.model_type_id}' is not one modelmill trains.",
    )


@rpc
def ListModelVersions(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    model, rows = models.list_versions(api.env, scope, request.model_id, api.page(request))
    return service.MultiModelVersionResponse(
        model_versions=[convert.model_version(r, model, scope, api.links) for r in rows]
    )


@rpc
def GetModelVersion(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    model, row = models.get_version(api.env, scope, request.model_id, request.version_id)
    return service.SingleModelVersionResponse(
        model_version=convert.model_version(row, model, scope, api.links)
    )


@rpc
def PatchModelVersions(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    model, rows = models.patch_versions(
        api.env, scope, request.model_id, [(v.id, v.description) for v in request.model_versions]
    )
    return service.MultiModelVersionResponse(
        model_versions=[convert.model_version(r, model, scope, api.links) for r in rows]
    )


@rpc
def DeleteModelVersion(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    models.delete_version(api.env, scope, request.model_id, request.version_id)
    return status_pb2.BaseResponse()
