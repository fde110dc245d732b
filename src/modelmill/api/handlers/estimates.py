"""Training time estimates: PostModelVersionsTrainingTimeEstimate, before a training starts."""

from __future__ import annotations

from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import duration_pb2, json_format

from modelmill.api.rpc import rpc
from modelmill.domain.errors import ApiError
from modelmill.services import estimates


@rpc
def PostModelVersionsTrainingTimeEstimate(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    if len(request.model_versions) != 1:
        raise ApiError(
            codes.MODEL_INVALID_ARGUMENT,
            "Send exactly one model version to estimate, with its train_info.params.",
        )
    train_info = request.model_versions[0].train_info
    params = json_format.MessageToDict(train_info.params) if train_info.HasField("params") else {}
    estimate = estimates.estimate_training(
        api.env, scope, request.model_id, params, request.estimated_input_count or None
    )
    return service.MultiTrainingTimeEstimateResponse(
        training_time_estimates=[duration_pb2.Duration(seconds=int(estimate.seconds))]
    )
