"""Annotations: PostAnnotations, ListAnnotations, PatchAnnotations, DeleteAnnotation(s)."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from clarifai_grpc.grpc.api.status import status_pb2

from modelmill.api import convert
from modelmill.api.rpc import batch_status, rpc
from modelmill.services import annotations, relabelling


@rpc
def PostAnnotations(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    items = [(a.id, a.input_id, convert.annotation_labels(a.data)) for a in request.annotations]
    results = annotations.post_annotations(api.env, scope, items)
    answers = []
    for result, message in zip(results, request.annotations, strict=True):
        if result.row is not None:
            answers.append(convert.annotation(result.row, result.input_id, scope))
        else:
            answer = pb.Annotation(id=result.id, input_id=result.input_id, data=message.data)
            answer.status.CopyFrom(convert.status(result.code, result.description))
            answers.append(answer)
    first_error = next((r.description for r in results if r.row is None), "")
    return service.MultiAnnotationResponse(
        status=batch_status([r.code for r in results], codes.ANNOTATION_SUCCESS, first_error),
        annotations=answers,
    )


@rpc
def ListAnnotations(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = annotations.list_annotations(api.env, scope, api.page(request), list(request.input_ids))
    return service.MultiAnnotationResponse(
        annotations=[convert.annotation(row, input_id, scope) for row, input_id in rows]
    )


@rpc
def PatchAnnotations(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    items = [(a.id, a.input_id, convert.annotation_labels(a.data)) for a in request.annotations]
    rows = relabelling.patch_annotations(api.env, scope, items, request.action)
    return service.MultiAnnotationResponse(
        annotations=[convert.annotation(row, input_id, scope) for row, input_id in rows]
    )


@rpc
def DeleteAnnotations(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    relabelling.delete_annotations(api.env, scope, list(request.ids), list(request.input_ids))
    return status_pb2.BaseResponse()


@rpc
def DeleteAnnotation(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    relabelling.delete_annotations(api.env, scope, [request.annotation_id], [request.input_id])
    return status_pb2.BaseResponse()
