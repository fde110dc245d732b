"""Concepts of an app: created explicitly or automatically when inputs and annotations name them."""

from __future__ import annotations

from collections.abc import Mapping

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id
from modelmill.services import AppScope, Env
from modelmill.services.paging import Page
from modelmill.store.tables import Concept


def ensure_concepts(session: Session, app_pk: int, names: Mapping[str, str]) -> None:
    """Create the concepts of `names` (id → name) that the app does not have yet."""
    if not names:
        return
    existing = set(
        session.scalars(
            select(Concept.id).where(Concept.app_pk == app_pk, Concept.id.in_(list(names)))
        )
    )
    session.add_all(
        Concept(app_pk=app_pk, id=cid, name=name or cid)
        for cid, name in names.items()
        if cid not in existing
    )
    session.flush()


def create_concepts(env: Env, app: AppScope, concepts: list[tuple[str, str]]) -> list[Concept]:
    """PostConcepts: create (id, name) pairs; an id the app already has is an error."""
    for concept_id, _ in concepts:
        check_id(concept_id, "concept", codes.CONCEPTS_INVALID_REQUEST)
    ids = [cid for cid, _ in concepts]
    if len(set(ids)) != len(ids):
        raise ApiError(codes.CONCEPTS_INVALID_REQUEST, "The request names a concept id twice.")
    with env.db.session() as session:
        taken = list(
            session.scalars(
                select(Concept.id).where(Concept.app_pk == app.app_pk, Concept.id.in_(ids))
            )
        )
        if taken:
            raise ApiError(
                codes.CONCEPTS_INVALID_REQUEST,
                f"Concepts already exist in app '{app.app_id}': {', '.join(sorted(taken))}.",
                "Use PatchConcepts to rename an existing concept.",
            )
        rows = [Concept(app_pk=app.app_pk, id=cid, name=name or cid) for cid, name in concepts]
        session.add_all(rows)
    return rows


def list_concepts(env: Env, app: AppScope, page: Page) -> list[Concept]:
    with env.db.session() as session:
        query = select(Concept).where(Concept.app_pk == app.app_pk).order_by(Concept.pk)
        return list(session.scalars(page.apply(query)))


def get_concept(env: Env, app: AppScope, concept_id: str) -> Concept:
    with env.db.session() as session:
        row = session.scalar(
            select(Concept).where(Concept.app_pk == app.app_pk, Concept.id == concept_id)
        )
    if row is None:
        raise ApiError(
            codes.CONN_DOES_NOT_EXIST,
            f"Concept '{concept_id}' does not exist in app '{app.app_id}'.",
        )
    return row


def patch_concepts(env: Env, app: AppScope, concepts: list[tuple[str, str]]) -> list[Concept]:
    """PatchConcepts (overwrite): set the names of existing concepts."""
    with env.db.session() as session:
        rows = []
        for concept_id, name in concepts:
            row = session.scalar(
                select(Concept).where(Concept.app_pk == app.app_pk, Concept.id == concept_id)
            )
            if row is None:
                raise ApiError(
                    codes.CONN_DOES_NOT_EXIST,
                    f"Concept '{concept_id}' does not exist in app '{app.app_id}'.",
                )
            row.name = name or row.name
            rows.append(row)
    return rows
