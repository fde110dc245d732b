"""Inputs: PostInputs, ListInputs, GetInput, DeleteInputs, DeleteInput, GetInputCount,
GetInputsAddJob, PatchInputs."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from clarifai_grpc.grpc.api.status import status_pb2
from google.protobuf import json_format

from modelmill.api import convert
from modelmill.api.rpc import batch_status, rpc
from modelmill.services import inputs, relabelling


def _add_job(job) -> pb.InputsAddJob:  # type: ignore[no-untyped-def]
    # Inputs are checked and stored inside PostInputs, so a job is finished once it exists.
    return pb.InputsAddJob(
        id=job.id,
        progress=pb.InputsAddJobProgress(
            success_count=job.processed - job.failed, failed_count=job.failed
        ),
        created_at=convert.timestamp(job.created_at),
        status=convert.status(codes.JOB_COMPLETED),
    )


@rpc
def PostInputs(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    specs = [convert.new_input(message) for message in request.inputs]
    results, job_id = inputs.post_inputs(api.env, scope, specs, request.inputs_add_job_id)
    answers = []
    for result, message in zip(results, request.inputs, strict=True):
        if result.row is not None:
            answer = convert.input_(result.row, result.labels, scope, api.links)
        else:
            answer = pb.Input(id=result.id, data=message.data)
            if answer.data.HasField("image"):
                answer.data.image.ClearField("base64")  # never echo megabytes back
            answer.status.CopyFrom(convert.status(result.code, result.description, result.details))
        answers.append(answer)
    first_error = next((r.description for r in results if r.row is None), "")
    return service.MultiInputResponse(
        status=batch_status([r.code for r in results], codes.INPUT_DOWNLOAD_SUCCESS, first_error),
        inputs=answers,
        inputs_add_job=pb.InputsAddJob(id=job_id),
    )


@rpc
def ListInputs(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = inputs.list_inputs_with_labels(
        api.env, scope, api.page(request), list(request.ids), request.status.code
    )
    return service.MultiInputResponse(
        inputs=[convert.input_(row, labels, scope, api.links) for row, labels in rows]
    )


@rpc
def GetInput(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    row, labels = inputs.get_input_with_labels(api.env, scope, request.input_id)
    return service.SingleInputResponse(input=convert.input_(row, labels, scope, api.links))


@rpc
def DeleteInputs(api, request, principal):  # type: ignore[no-untyped-def]
    inputs.delete_inputs(api.env, api.scope(request.user_app_id, principal), list(request.ids))
    return status_pb2.BaseResponse()


@rpc
def DeleteInput(api, request, principal):  # type: ignore[no-untyped-def]
    inputs.delete_inputs(api.env, api.scope(request.user_app_id, principal), [request.input_id])
    return status_pb2.BaseResponse()


@rpc
def GetInputCount(api, request, principal):  # type: ignore[no-untyped-def]
    counts = inputs.count_inputs(api.env, api.scope(request.user_app_id, principal))
    return service.SingleInputCountResponse(
        counts=pb.InputCount(
            processed=counts.get(codes.INPUT_DOWNLOAD_SUCCESS, 0),
            errors=sum(n for code, n in counts.items() if code != codes.INPUT_DOWNLOAD_SUCCESS),
        )
    )


@rpc
def GetInputsAddJob(api, request, principal):  # type: ignore[no-untyped-def]
    job = inputs.get_add_job(api.env, api.scope(request.user_app_id, principal), request.id)
    return service.SingleInputsAddJobResponse(inputs_add_job=_add_job(job))


def _input_patch(message: pb.Input) -> relabelling.InputPatch:
    data = message.data
    other = [kind for kind in ("image", "text", "video", "audio") if data.HasField(kind)]
    if data.regions:
        other.append("regions")
    if message.dataset_ids:
        other.append("dataset_ids (PostDatasetInputs adds inputs to a dataset)")
    return relabelling.InputPatch(
        id=message.id,
        metadata=json_format.MessageToDict(data.metadata) if data.HasField("metadata") else None,
        concepts=convert.concept_labels(data.concepts) if data.concepts else None,
        other=", ".join(other),
    )


@rpc
def PatchInputs(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    ids = relabelling.patch_inputs(
        api.env, scope, [_input_patch(m) for m in request.inputs], request.action
    )
    rows = [inputs.get_input_with_labels(api.env, scope, input_id) for input_id in ids]
    return service.MultiInputResponse(
        inputs=[convert.input_(row, labels, scope, api.links) for row, labels in rows]
    )
