"""Searches: PostInputsSearches, PostAnnotationsSearches (as the SDK's Search.query sends them)
and PostModelsSearches."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import json_format

from modelmill.api import convert
from modelmill.api.rpc import rpc
from modelmill.domain.errors import ApiError
from modelmill.services import models, searches
from modelmill.services.paging import Page


def _condition(data: pb.Data, input_: pb.Input | None, negate: bool) -> searches.Condition:
    condition = searches.Condition(
        concepts=convert.concept_labels(data.concepts),
        metadata=json_format.MessageToDict(data.metadata) if data.HasField("metadata") else {},
        negate=negate,
    )
    if input_ is not None:
        condition.kinds = [
            k for k in ("image", "text", "video", "audio") if input_.data.HasField(k)
        ]
        condition.dataset_ids = list(input_.dataset_ids)
        condition.status_code = input_.status.code
    return condition


def _similar(annotation: pb.Annotation) -> searches.Similar | None:
    data = annotation.data
    if data.HasField("image"):
        return searches.Similar(image_bytes=data.image.base64 or None, image_url=data.image.url)
    if data.HasField("text"):
        return searches.Similar(text=data.text.raw)
    if annotation.input_id:
        return searches.Similar(input_id=annotation.input_id)
    return None


def _query(searches_: list[pb.Search]) -> searches.SearchQuery:
    if len(searches_) != 1:
        raise ApiError(
            codes.SEARCH_INVALID_REQUEST,
            f"Send exactly one search in 'searches'; got {len(searches_)}.",
        )
    search = searches_[0]
    query = searches.SearchQuery(min_value=search.min_value)
    for item in search.query.filters:
        query.conditions.append(_condition(item.annotation.data, item.input, item.negate))
    for rank in search.query.ranks:
        similar = _similar(rank.annotation)
        if similar is not None:
            if rank.negate:
                raise ApiError(
                    codes.SEARCH_INVALID_REQUEST,
                    "A similarity rank cannot be negated; use a negated filter to exclude inputs.",
                )
            query.similar.append(similar)
            embedder = rank.annotation.embed_model_version_id
            if embedder and query.embed_model_version_id not in ("", embedder):
                raise ApiError(
                    codes.SEARCH_INVALID_REQUEST,
                    "Rank with one embed_model_version_id in a search: different embedders' "
                    "vectors cannot be compared.",
                )
            query.embed_model_version_id = embedder or query.embed_model_version_id
        elif rank.annotation.data.concepts or rank.annotation.data.HasField("metadata"):
            # No general concept model ranks by predicted concepts here: a label rank filters.
            query.conditions.append(_condition(rank.annotation.data, None, rank.negate))
    return query


def _hits(api, scope, result: searches.SearchResult) -> service.MultiSearchResponse:  # type: ignore[no-untyped-def]
    reply = service.MultiSearchResponse(
        status=convert.status(codes.SUCCESS, result.note or "Ok"),
    )
    for hit in result.hits:
        message = pb.Hit(
            score=hit.score,
            input=convert.input_(
                hit.input, hit.labels if hit.annotation is None else {}, scope, api.links
            ),
            user_id=scope.user_id,
            app_id=scope.app_id,
        )
        if hit.annotation is not None:
            message.annotation.CopyFrom(convert.annotation(hit.annotation, hit.input.id, scope))
        reply.hits.append(message)
    return reply


@rpc
def PostInputsSearches(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    page = Page.of(request.pagination.page, request.pagination.per_page)
    result = searches.search_inputs(
        api.env, scope, _query(list(request.searches)), page, api.search_indexes
    )
    return _hits(api, scope, result)


@rpc
def PostAnnotationsSearches(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    page = Page.of(request.pagination.page, request.pagination.per_page)
    result = searches.search_annotations(
        api.env, scope, _query(list(request.searches)), page, api.search_indexes
    )
    return _hits(api, scope, result)


@rpc
def PostModelsSearches(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    page = Page.of(request.pagination.page, request.pagination.per_page)
    rows = models.list_models(
        api.env,
        scope,
        page,
        request.model_query.model_type_id,
        request.model_query.name,
    )
    return service.MultiModelResponse(
        models=[convert.model(m, v, scope, api.links) for m, v in rows]
    )
