"""Apps: PostApps, GetApp, ListApps."""

from __future__ import annotations

from clarifai_grpc.grpc.api import service_pb2 as service

from modelmill.api import convert
from modelmill.api.rpc import rpc
from modelmill.services import apps


@rpc
def PostApps(api, request, principal):  # type: ignore[no-untyped-def]
    rows = apps.create_apps(
        api.env,
        principal,
        request.user_app_id.user_id,
        [(a.id, a.name, a.description) for a in request.apps],
    )
    return service.MultiAppResponse(apps=[convert.app(r, principal.user_id) for r in rows])


@rpc
def GetApp(api, request, principal):  # type: ignore[no-untyped-def]
    scope = api.scope(request.user_app_id, principal)
    return service.SingleAppResponse(
        app=convert.app(apps.get_app(api.env, scope.app_pk), scope.user_id)
    )


@rpc
def ListApps(api, request, principal):  # type: ignore[no-untyped-def]
    rows = apps.list_apps(api.env, principal, request.user_app_id.user_id, api.page(request))
    return service.MultiAppResponse(apps=[convert.app(r, principal.user_id) for r in rows])
