"""Workflows: PostWorkflows, GetWorkflow, ListWorkflows, PatchWorkflows, DeleteWorkflow(s) and
PostWorkflowResults."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from clarifai_grpc.grpc.api.status import status_pb2

from modelmill.api import convert
from modelmill.api.rpc import batch_status, rpc
from modelmill.domain.errors import ApiError
from modelmill.services import workflow_runs, workflows

# A node that does not read this kind of input skipped it: that is no failure.
NOT_FAILURES = (codes.SUCCESS, codes.WORKFLOW_NO_MATCHING_INPUT)


def _spec(message: pb.Workflow) -> workflows.WorkflowSpec:
    return workflows.WorkflowSpec(
        message.id,
        message.description,
        tuple(
            workflows.Node(
                node.id,
                node.model.id,
                node.model.model_version.id,
                tuple(i.node_id for i in node.node_inputs),
            )
            for node in message.nodes
        ),
    )


@rpc
def PostWorkflows(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    views = workflows.create_workflows(api.env, scope, [_spec(w) for w in request.workflows])
    return service.MultiWorkflowResponse(workflows=[convert.workflow(v, scope) for v in views])


@rpc
def GetWorkflow(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    view = workflows.get_workflow(api.env, scope, request.workflow_id)
    return service.SingleWorkflowResponse(workflow=convert.workflow(view, scope))


@rpc
def ListWorkflows(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    views = workflows.list_workflows(api.env, scope, api.page(request))
    return service.MultiWorkflowResponse(workflows=[convert.workflow(v, scope) for v in views])


@rpc
def PatchWorkflows(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    views = workflows.patch_workflows(
        api.env, scope, [_spec(w) for w in request.workflows], request.action or "merge"
    )
    return service.MultiWorkflowResponse(workflows=[convert.workflow(v, scope) for v in views])


@rpc
def DeleteWorkflow(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    workflows.delete_workflows(api.env, scope, [request.workflow_id])
    return status_pb2.BaseResponse()


@rpc
def DeleteWorkflows(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    workflows.delete_workflows(api.env, scope, list(request.ids), request.delete_all)
    return status_pb2.BaseResponse()


@rpc
def PostWorkflowResults(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    run = workflow_runs.run_workflow(
        api.env,
        api.predictors,
        scope,
        request.workflow_id,
        request.version_id,
        [convert.new_input(message) for message in request.inputs],
        {k: v for k, v in convert.output_config(request.output_config).items() if v},
    )
    results = []
    for message, outcomes in zip(request.inputs, run.results, strict=True):
        echo = pb.Input(id=message.id)
        result = pb.WorkflowResult(id=message.id, input=echo)
        for node, names, outcome in zip(run.nodes, run.concept_names, outcomes, strict=True):
            if isinstance(outcome, ApiError):
                output = pb.Output(
                    input=echo, status=convert.status(outcome.code, outcome.description)
                )
            else:
                output = convert.output(outcome, echo, names)
            output.id = node.id
            output.model.CopyFrom(
                pb.Model(
                    id=node.model_id,
                    model_type_id=node.model_type_id,
                    app_id=scope.app_id,
                    user_id=scope.user_id,
                    model_version=pb.ModelVersion(id=node.version_id),
                )
            )
            result.outputs.append(output)
        failure = next(
            (o.status for o in result.outputs if o.status.code not in NOT_FAILURES), None
        )
        result.status.CopyFrom(failure or convert.status(codes.SUCCESS, "Ok"))
        results.append(result)
    return service.PostWorkflowResultsResponse(
        status=batch_status(
            [r.status.code for r in results],
            codes.SUCCESS,
            next((r.status.description for r in results if r.status.code != codes.SUCCESS), ""),
        ),
        workflow=convert.workflow(run.workflow, scope),
        results=results,
    )
