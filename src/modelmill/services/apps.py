"""Apps of a user: create, get, list, patch and delete; and the user itself."""

from __future__ import annotations

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select

from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id
from modelmill.services import AppScope, Env
from modelmill.services.auth import Principal, check_user
from modelmill.services.paging import Page
from modelmill.store.tables import App, User


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


def _check_unlimited(principal: Principal, verb: str) -> None:
    if principal.app_ids:
        raise ApiError(
            codes.CONN_INSUFFICIENT_SCOPES,
            f"This key is limited to some apps; it cannot {verb} apps. Use a key made without "
            "--app.",
        )


def patch_apps(
    env: Env,
    principal: Principal,
    user_id: str,
    patches: list[tuple[str, str, str]],
    action: str = "overwrite",
) -> list[App]:
    """PatchApps / PatchApp: (id, name, description); empty fields stay as they are, and with
    action "remove" the named ones are cleared (a name falls back to the id). All apps must
    exist, or nothing changes."""
    check_user(principal, user_id)
    _check_unlimited(principal, "patch")
    ids = [app_id for app_id, _, _ in patches]
    if not ids:
        raise ApiError(codes.CONN_INVALID_REQUEST, "Send the apps to patch in 'apps'.")
    with env.db.session() as session:
        rows = {
            r.id: r
            for r in session.scalars(
                select(App).where(App.user_pk == principal.user_pk, App.id.in_(ids))
            )
        }
        missing = [i for i in ids if i not in rows]
        if missing:
            raise ApiError(
                codes.CONN_DOES_NOT_EXIST,
                f"Apps {', '.join(missing)} do not exist for user '{principal.user_id}'; "
                "nothing was patched.",
            )
        remove = action == "remove"
        for app_id, name, description in patches:
            if name:
                rows[app_id].name = app_id if remove else name
            if description:
                rows[app_id].description = "" if remove else description
        return [rows[i] for i in ids]


def delete_app(env: Env, principal: Principal, app: AppScope) -> None:
    """DeleteApp: the app and everything in it (inputs, datasets, models, their jobs). Blobs are
    content-addressed and may be shared, so they stay."""
    _check_unlimited(principal, "delete")
    with env.db.session() as session:
        row = session.get(App, app.app_pk)
        if row is not None:
            session.delete(row)


def get_user(env: Env, principal: Principal, user_id: str) -> User:
    """GetUser: the key's own user ('me' names it too)."""
    check_user(principal, user_id)
    with env.db.session() as session:
        row = session.get(User, principal.user_pk)
    assert row is not None  # the key was just checked against it
    return row
