"""Apps of a user: create, get and list."""

from __future__ import annotations

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select

from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id
from modelmill.services import Env
from modelmill.services.auth import Principal, check_user
from modelmill.services.paging import Page
from modelmill.store.tables import App


def create_apps(
    env: Env, principal: Principal, user_id: str, apps: list[tuple[str, str, str]]
) -> list[App]:
    """PostApps: (id, name, description) triples; all or none are created."""
    check_user(principal, user_id)
    if principal.app_ids:
        raise ApiError(
            codes.CONN_INSUFFICIENT_SCOPES,
            "This key is limited to some apps; it cannot create apps.",
        )
    ids = [check_id(app_id, "app") for app_id, _, _ in apps]
    with env.db.session() as session:
        taken = list(
            session.scalars(select(App.id).where(App.user_pk == principal.user_pk, App.id.in_(ids)))
        )
        if taken or len(set(ids)) != len(ids):
            raise ApiError(
                codes.CONN_INVALID_REQUEST,
                "App ids must be new and distinct; already used: "
                f"{', '.join(taken) or 'repeated'}.",
            )
        rows = [
            App(user_pk=principal.user_pk, id=app_id, name=name or app_id, description=description)
            for app_id, name, description in apps
        ]
        session.add_all(rows)
    return rows


def list_apps(env: Env, principal: Principal, user_id: str, page: Page) -> list[App]:
    check_user(principal, user_id)
    with env.db.session() as session:
        query = select(App).where(App.user_pk == principal.user_pk).order_by(App.pk)
        if principal.app_ids:
            query = query.where(App.id.in_(principal.app_ids))
        return list(session.scalars(page.apply(query)))


def get_app(env: Env, app_pk: int) -> App:
    with env.db.session() as session:
        row = session.get(App, app_pk)
    assert row is not None  # resolve_app found it
    return row
