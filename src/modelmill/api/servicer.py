"""The one clarifai.api.V2 servicer, assembled from the handler modules, used by gRPC and REST."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from clarifai_grpc.grpc.api import service_pb2_grpc

from modelmill.api.handlers import (
    annotations,
    apps,
    concepts,
    datasets,
    estimates,
    inputs,
    models,
    searches,
    training,
    workflows,
)
from modelmill.services import AppScope, Env, auth
from modelmill.services.links import Links
from modelmill.services.paging import Page
from modelmill.services.predictions import PredictorCache
from modelmill.services.searches import VectorIndexCache

# The key of the call being served, set by `authenticate`. Links read it so that every handler's
# `api.links` signs with the caller's key without each handler (and helper) threading the
# principal through to the converters; each call runs in its own thread/context.
_CALLER_KEY: ContextVar[int] = ContextVar("caller_key", default=0)

HANDLER_MODULES = [
    apps,
    inputs,
    concepts,
    annotations,
    datasets,
    models,
    training,
    estimates,
    searches,
    workflows,
]


class Servicer(service_pb2_grpc.V2Servicer):
    """V2 methods modelmill implements; the rest answer UNIMPLEMENTED as the base class does."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self._links = Links(env, env.settings.resolved_public_url)
        self.predictors = PredictorCache(env)
        self.search_indexes = VectorIndexCache()

    @property
    def links(self) -> Links:
        """Links signed for the current caller: they die with its key (and expire anyway)."""
        return replace(self._links, key_pk=_CALLER_KEY.get())

    def authenticate(self, authorization: str | None) -> auth.Principal:
        _CALLER_KEY.set(0)
        principal = auth.authenticate(self.env, authorization)
        _CALLER_KEY.set(principal.key_pk)
        return principal

    def scope(self, user_app_id: Any, principal: auth.Principal) -> AppScope:
        app_id = user_app_id.app_id
        if not app_id and len(principal.app_ids) == 1:
            app_id = principal.app_ids[0]  # a key for one app implies it on unscoped paths
        return auth.resolve_app(self.env, principal, user_app_id.user_id, app_id)

    def auth_scope(self, principal: auth.Principal, user_id: str, app_id: str) -> AppScope:
        return auth.resolve_app(self.env, principal, user_id, app_id)

    @staticmethod
    def page(request: Any) -> Page:
        return Page.of(request.page, request.per_page)


def implemented_methods() -> dict[str, Any]:
    return {
        name: function
        for module in HANDLER_MODULES
        for name, function in vars(module).items()
        if getattr(function, "is_modelmill_rpc", False)
    }


for _name, _function in implemented_methods().items():
    setattr(Servicer, _name, _function)
