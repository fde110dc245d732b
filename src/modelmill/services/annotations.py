"""Annotations: concept labels and regions on inputs, added after the inputs themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select

from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id, new_id
from modelmill.services import AppScope, Env
from modelmill.services.concepts import ensure_concepts
from modelmill.services.labels import check_labels, concept_names
from modelmill.services.paging import Page
from modelmill.store.tables import Annotation, Input


@dataclass
class AnnotationResult:
    id: str
    input_id: str
    code: int
    description: str = ""
    row: Annotation | None = None
    labels: dict[str, Any] = field(default_factory=dict)


def post_annotations(
    env: Env, app: AppScope, items: list[tuple[str, str, dict[str, Any]]]
) -> list[AnnotationResult]:
    """Add (annotation id, input id, Data dict) items; each bad one gets its own status."""
    if not items:
        raise ApiError(codes.ANNOTATION_INVALID_ARGUMENT, "The request has no annotations.")
    results = []
    with env.db.session() as session:
        input_ids = [input_id for _, input_id, _ in items]
        inputs = {
            row.id: row.pk
            for row in session.scalars(
                select(Input).where(Input.app_pk == app.app_pk, Input.id.in_(input_ids))
            )
        }
        good = []
        for annotation_id, input_id, data in items:
            result = AnnotationResult(annotation_id or new_id(), input_id, codes.ANNOTATION_SUCCESS)
            results.append(result)
            try:
                check_id(result.id, "annotation", codes.ANNOTATION_INVALID_ARGUMENT)
                if input_id not in inputs:
                    raise ApiError(
                        codes.ANNOTATION_INVALID_ARGUMENT,
                        f"Input '{input_id}' does not exist in app '{app.app_id}'; "
                        "add the input before annotating it.",
                    )
                result.labels = check_labels(
                    data, codes.ANNOTATION_INVALID_ARGUMENT, env.settings.max_image_pixels
                )
                if not result.labels:
                    raise ApiError(
                        codes.ANNOTATION_INVALID_ARGUMENT,
                        "The annotation has no concepts, no regions and no text.",
                    )
                good.append(result)
            except ApiError as error:
                result.code, result.description = error.code, error.description
        taken = set(
            session.scalars(
                select(Annotation.id).where(
                    Annotation.app_pk == app.app_pk, Annotation.id.in_([r.id for r in good])
                )
            )
        )
        names: dict[str, str] = {}
        for result in good:
            if result.id in taken:
                result.code = codes.ANNOTATION_INVALID_ARGUMENT
                result.description = f"Annotation id '{result.id}' is already used in this app."
                continue
            names.update(concept_names(result.labels))
            result.row = Annotation(
                app_pk=app.app_pk,
                id=result.id,
                input_pk=inputs[result.input_id],
                data=result.labels,
                status_code=codes.ANNOTATION_SUCCESS,
            )
            session.add(result.row)
        ensure_concepts(session, app.app_pk, names)
    return results


def list_annotations(
    env: Env, app: AppScope, page: Page, input_ids: list[str] | None = None
) -> list[tuple[Annotation, str]]:
    """Annotations with the id of their input, newest last."""
    with env.db.session() as session:
        query = (
            select(Annotation, Input.id)
            .join(Input, Input.pk == Annotation.input_pk)
            .where(Annotation.app_pk == app.app_pk)
        )
        if input_ids:
            query = query.where(Input.id.in_(input_ids))
        return [(a, i) for a, i in session.execute(page.apply(query.order_by(Annotation.pk)))]
