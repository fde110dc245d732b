"""Apps and the user: PostApps, GetApp, ListApps, PatchApp(s), DeleteApp, GetUser."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api.status import status_pb2

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


@rpc
def PatchApps(api, request, principal):  # type: ignore[no-untyped-def]
    rows = apps.patch_apps(
        api.env,
        principal,
        request.user_app_id.user_id,
        [(a.id, a.name, a.description) for a in request.apps],
        request.action,
    )
    return service.MultiAppResponse(apps=[convert.app(r, principal.user_id) for r in rows])


@rpc
def PatchApp(api, request, principal):  # type: ignore[no-untyped-def]
    app = request.app
    (row,) = apps.patch_apps(
        api.env,
        principal,
        request.user_app_id.user_id,
        [(request.user_app_id.app_id or app.id, app.name, app.description)],
        request.action,
    )
    return service.SingleAppResponse(app=convert.app(row, principal.user_id))


@rpc
def DeleteApp(api, request, principal):  # type: ignore[no-untyped-def]
    apps.delete_app(api.env, principal, api.scope(request.user_app_id, principal))
    return status_pb2.BaseResponse()


@rpc
def GetUser(api, request, principal):  # type: ignore[no-untyped-def]
    row = apps.get_user(api.env, principal, request.user_app_id.user_id)
    return service.SingleUserResponse(
        user=pb.User(id=row.id, created_at=convert.timestamp(row.created_at))
    )
