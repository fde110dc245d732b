"""Personal access tokens: create, revoke, authenticate, and resolve which app a call may use."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id
from modelmill.services import AppScope, Env
from modelmill.store.tables import ApiKey, App, User, utcnow

TOKEN_BYTES = 16
ME = "me"  # Clarifai's alias for the key's own user


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's user and, if the key is limited, the apps it may use."""

    user_pk: int
    user_id: str
    app_ids: tuple[str, ...] = ()
    key_pk: int = 0  # the key's row: signed links it makes die with it


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_user(session: Session, user_id: str) -> User:
    user = session.scalar(select(User).where(User.id == user_id))
    if user is None:
        user = User(id=check_id(user_id, "user"))
        session.add(user)
        session.flush()
    return user


def create_token(env: Env, user_id: str, app_id: str | None = None, description: str = "") -> str:
    """Create a key for `user_id` (making the user, and the app if named, when missing).

    A key made with `app_id` may use only that app.
    """
    token = secrets.token_hex(TOKEN_BYTES)
    with env.db.session() as session:
        user = ensure_user(session, user_id)
        if app_id:
            exists = session.scalar(select(App).where(App.user_pk == user.pk, App.id == app_id))
            if exists is None:
                session.add(App(user_pk=user.pk, id=check_id(app_id, "app"), name=app_id))
        session.add(
            ApiKey(
                user_pk=user.pk,
                token_hash=_hash(token),
                app_ids=[app_id] if app_id else [],
                description=description,
            )
        )
    return token


def revoke_token(env: Env, token: str) -> bool:
    """Revoke a key; False if no such key exists."""
    with env.db.session() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.token_hash == _hash(token)))
        if key is None:
            return False
        key.revoked_at = key.revoked_at or utcnow()
    return True


def key_is_live(env: Env, key_pk: int) -> bool:
    """Whether the key with this row exists and is not revoked."""
    with env.db.session() as session:
        key = session.get(ApiKey, key_pk)
        return key is not None and key.revoked_at is None


def authenticate(env: Env, authorization: str | None) -> Principal:
    """The caller behind an `authorization: Key <PAT>` value, or CONN_KEY_INVALID."""
    if not authorization:
        raise ApiError(
            codes.CONN_KEY_INVALID,
            "No API key was sent.",
            "Send the header 'authorization: Key <PAT>'; `modelmill token create` makes a key.",
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "key" or not token.strip():
        raise ApiError(
            codes.CONN_KEY_INVALID,
            "The authorization value is not of the form 'Key <PAT>'.",
        )
    with env.db.session() as session:
        row = session.execute(
            select(ApiKey, User).join(User).where(ApiKey.token_hash == _hash(token.strip()))
        ).first()
    if row is None:
        raise ApiError(codes.CONN_KEY_INVALID, "The API key is not valid for this server.")
    key, user = row
    if key.revoked_at is not None:
        raise ApiError(
            codes.CONN_KEY_INVALID,
            f"The API key was revoked at {key.revoked_at:%Y-%m-%d %H:%M} UTC; create a new one.",
        )
    return Principal(user.pk, user.id, tuple(key.app_ids or ()), key.pk)


def check_user(principal: Principal, user_id: str) -> None:
    if user_id not in ("", ME, principal.user_id):
        raise ApiError(
            codes.CONN_INSUFFICIENT_SCOPES,
            f"This key belongs to user '{principal.user_id}'; it cannot use resources of "
            f"user '{user_id}'.",
        )


def resolve_app(env: Env, principal: Principal, user_id: str, app_id: str) -> AppScope:
    """The app named by a request's user_app_id, if this caller may use it."""
    check_user(principal, user_id)
    if not app_id:
        raise ApiError(
            codes.CONN_INVALID_REQUEST,
            "No app was named: set user_app_id.app_id, or use the /v2/users/{user}/apps/{app}/... "
            "paths.",
        )
    if principal.app_ids and app_id not in principal.app_ids:
        raise ApiError(
            codes.CONN_INSUFFICIENT_SCOPES,
            f"This key is limited to the apps {', '.join(principal.app_ids)}; it cannot use "
            f"app '{app_id}'.",
        )
    with env.db.session() as session:
        app = session.scalar(select(App).where(App.user_pk == principal.user_pk, App.id == app_id))
    if app is None:
        raise ApiError(
            codes.CONN_DOES_NOT_EXIST,
            f"App '{app_id}' does not exist for user '{principal.user_id}'.",
        )
    return AppScope(principal.user_pk, principal.user_id, app.pk, app.id, principal.app_ids)
