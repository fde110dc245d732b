"""Who may read a stored blob with an API key: a caller one of whose apps references it (an input's
image, an export archive). Blobs are content-addressed and shared across apps, so knowing a hash
must not be enough to read another user's data."""

from __future__ import annotations

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import Select, exists, select

from modelmill.domain.errors import ApiError
from modelmill.services import Env
from modelmill.services.auth import Principal
from modelmill.store.tables import App, Export, Input, Model, ModelVersion


def _apps_of(principal: Principal) -> Select[tuple[int]]:
    apps = select(App.pk).where(App.user_pk == principal.user_pk)
    if principal.app_ids:  # a key limited to some apps reads only theirs
        apps = apps.where(App.id.in_(principal.app_ids))
    return apps


def check_blob_readable(env: Env, principal: Principal, key: str) -> None:
    """Raise a not-found ApiError unless an app this caller may use references blob `key`.
    The same answer as for a missing blob: a refusal must not confirm that a hash exists."""
    apps = _apps_of(principal)
    as_input = exists().where(Input.blob_key == key, Input.app_pk.in_(apps))
    as_export = exists().where(
        Export.blob_key == key,
        Export.model_version_pk == ModelVersion.pk,
        ModelVersion.model_pk == Model.pk,
        Model.app_pk.in_(apps),
    )
    with env.db.session() as session:
        readable = session.scalar(select(as_input | as_export))
    if not readable:
        raise ApiError(codes.CONN_DOES_NOT_EXIST, "No such blob in the apps this key may use.")
