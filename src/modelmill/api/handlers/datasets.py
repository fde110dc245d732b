"""Datasets, dataset inputs and dataset versions with their metrics groups and exports."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from clarifai_grpc.grpc.api.status import status_pb2
from google.protobuf import json_format

from modelmill.api import archives, convert
from modelmill.api.rpc import rpc
from modelmill.domain.errors import ApiError
from modelmill.services import dataset_exports, datasets


def _metadata(message) -> dict:  # type: ignore[no-untyped-def]
    return json_format.MessageToDict(message.metadata) if message.HasField("metadata") else {}


@rpc
def PostDatasets(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = datasets.create_datasets(
        api.env, scope, [(d.id, d.description, _metadata(d)) for d in request.datasets]
    )
    return service.MultiDatasetResponse(datasets=[convert.dataset(r, scope) for r in rows])


@rpc
def ListDatasets(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = datasets.list_datasets(api.env, scope, api.page(request))
    return service.MultiDatasetResponse(datasets=[convert.dataset(r, scope) for r in rows])


@rpc
def GetDataset(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    row = datasets.get_dataset(api.env, scope, request.dataset_id)
    return service.SingleDatasetResponse(dataset=convert.dataset(row, scope))


@rpc
def PatchDatasets(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    patches = [
        (d.id, d.description or None, _metadata(d) if d.HasField("metadata") else None)
        for d in request.datasets
    ]
    rows = datasets.patch_datasets(api.env, scope, patches, request.action or "merge")
    return service.MultiDatasetResponse(datasets=[convert.dataset(r, scope) for r in rows])


@rpc
def DeleteDatasets(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    datasets.delete_datasets(api.env, scope, list(request.dataset_ids))
    return status_pb2.BaseResponse()


@rpc
def PostDatasetInputs(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    input_ids = [d.input.id for d in request.dataset_inputs]
    datasets.add_dataset_inputs(api.env, scope, request.dataset_id, input_ids)
    return service.MultiDatasetInputResponse(
        dataset_inputs=[pb.DatasetInput(input=pb.Input(id=i)) for i in input_ids]
    )


@rpc
def ListDatasetInputs(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = datasets.list_dataset_inputs_with_labels(
        api.env, scope, request.dataset_id, api.page(request)
    )
    return service.MultiDatasetInputResponse(
        dataset_inputs=[
            pb.DatasetInput(input=convert.input_(row, labels, scope, api.links))
            for row, labels in rows
        ]
    )


@rpc
def DeleteDatasetInputs(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    datasets.remove_dataset_inputs(api.env, scope, request.dataset_id, list(request.input_ids))
    return status_pb2.BaseResponse()


@rpc
def PostDatasetVersions(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = datasets.create_versions(
        api.env,
        scope,
        request.dataset_id,
        [(v.id, v.description) for v in request.dataset_versions],
    )
    return service.MultiDatasetVersionResponse(
        dataset_versions=[convert.dataset_version(r, request.dataset_id, scope) for r in rows]
    )


@rpc
def ListDatasetVersions(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = datasets.list_versions(api.env, scope, request.dataset_id, api.page(request))
    return service.MultiDatasetVersionResponse(
        dataset_versions=[convert.dataset_version(r, request.dataset_id, scope) for r in rows]
    )


@rpc
def GetDatasetVersion(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    row = datasets.get_version(api.env, scope, request.dataset_id, request.dataset_version_id)
    return service.SingleDatasetVersionResponse(
        dataset_version=convert.dataset_version(row, request.dataset_id, scope)
    )


@rpc
def DeleteDatasetVersions(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    datasets.delete_versions(api.env, scope, request.dataset_id, list(request.dataset_version_ids))
    return status_pb2.BaseResponse()


@rpc
def ListDatasetVersionMetricsGroups(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    row = datasets.get_version(api.env, scope, request.dataset_id, request.dataset_version_id)
    groups = convert.metrics_groups(row)
    if request.types:
        groups = [g for g in groups if g.type in request.types]
    return service.MultiDatasetVersionMetricsGroupResponse(dataset_version_metrics_groups=groups)


@rpc
def PutDatasetVersionExports(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    answers = []
    for export in request.exports:
        export_format = pb.DatasetVersionExportFormat.Name(export.format)
        inputs = dataset_exports.prepare_export(
            api.env, scope, request.dataset_id, request.dataset_version_id, export_format
        )
        archive = archives.clarifai_archive(inputs, request.dataset_id, api.links)
        key = dataset_exports.store_archive(api.env, archive)
        answers.append(
            pb.DatasetVersionExport(
                format=export.format,
                status=convert.status(codes.DATASET_VERSION_EXPORT_SUCCESS),
                url=api.links.archive(key),
                size=len(archive),
            )
        )
    if not answers:
        raise ApiError(
            codes.DATASET_VERSION_EXPORT_FAILED,
            "Name the export to make in 'exports', e.g. format CLARIFAI_DATA_PROTOBUF.",
        )
    return service.MultiDatasetVersionExportResponse(exports=answers)
