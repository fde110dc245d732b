"""Concepts: PostConcepts, ListConcepts, GetConcept, PatchConcepts."""

from __future__ import annotations

from clarifai_grpc.grpc.api import service_pb2 as service

from modelmill.api import convert
from modelmill.api.rpc import rpc
from modelmill.services import concepts


@rpc
def PostConcepts(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = concepts.create_concepts(api.env, scope, [(c.id, c.name) for c in request.concepts])
    return service.MultiConceptResponse(concepts=[convert.concept(r, scope) for r in rows])


@rpc
def ListConcepts(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = concepts.list_concepts(api.env, scope, api.page(request))
    return service.MultiConceptResponse(concepts=[convert.concept(r, scope) for r in rows])


@rpc
def GetConcept(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    row = concepts.get_concept(api.env, scope, request.concept_id)
    return service.SingleConceptResponse(concept=convert.concept(row, scope))


@rpc
def PatchConcepts(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    rows = concepts.patch_concepts(api.env, scope, [(c.id, c.name) for c in request.concepts])
    return service.MultiConceptResponse(concepts=[convert.concept(r, scope) for r in rows])
