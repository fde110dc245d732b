"""What every page shares: the context (services' Env, links, predictors, templates), the typed
dependencies routes take (`Web`, `SignedIn`, `CurrentApp`, `Form`), and `WebRoute`, which keeps
the session cookie, refuses POSTs without the session's CSRF token and turns errors into pages.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Annotated, Any
from urllib.parse import quote

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from markupsafe import escape
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException

from modelmill.domain.errors import ApiError
from modelmill.services import AppScope, Env, auth
from modelmill.services.links import Links
from modelmill.services.predictions import PredictorCache
from modelmill.web import session as sessions
from modelmill.web.session import WebSession

log = logging.getLogger("modelmill.web")

# Uploads arrive as multipart forms: many files per batch, and CSV/zip files of any size
# (they are spooled to disk by the parser; each input is checked against the server's limits).
MAX_FORM_FILES = 2000
MAX_FORM_FIELDS = 2000
MAX_FORM_PART_BYTES = 4 * 1024 * 1024
NOT_FOUND_CODES = {
    codes.CONN_DOES_NOT_EXIST,
    codes.MODEL_DOES_NOT_EXIST,
    codes.INPUT_DOES_NOT_EXIST,
}


@dataclass(frozen=True)
class WebContext:
    env: Env
    links: Links  # relative links (/blobs/...), so pages work behind any host name
    predictors: PredictorCache
    templates: Jinja2Templates


class SignInRequired(Exception):
    """Raised by `SignedIn` when nobody is signed in: the route answers with the sign-in page."""


class FormRefused(Exception):
    """A POST without this session's CSRF token (a forged or stale form)."""


def form_error(description: str) -> ApiError:
    """A form filled in wrongly, caught by the page before any service is called."""
    return ApiError(codes.CONN_INVALID_REQUEST, description)


# ---- rendering ------------------------------------------------------------------------------


def render(request: Request, name: str, status_code: int = 200, **values: Any) -> Response:
    web: WebContext = request.state.web
    return web.templates.TemplateResponse(request, name, values, status_code=status_code)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def redirect(request: Request, url: str, flash: str = "") -> Response:
    """See-other to `url` (htmx follows HX-Redirect); `flash` shows once on the next page."""
    if flash:
        request.state.session.flash = flash
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def take_flash(request: Request) -> str:
    session: WebSession | None = getattr(request.state, "session", None)
    if session is None or not session.flash:
        return ""
    message, session.flash = session.flash, ""
    return message


def _error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code)
    if is_htmx(request):
        # Swapped into the part of the page that asked (a whole page would not fit there), with
        # status 200 because htmx does not swap error statuses.
        return Response(
            f'<p class="alert error" role="alert">{escape(message)}</p>',
            200,
            media_type="text/html",
            headers={"HX-Reswap": "innerHTML"},
        )
    return render(request, "error.html", status_code, title=title, message=message)


# ---- the route class --------------------------------------------------------------------------


class WebRoute(APIRoute):
    """A page route: keeps the session cookie up to date and answers errors with pages.

    An ApiError becomes its description on a page (never a stack trace); a missing session sends
    the browser to the sign-in page; a POST without the CSRF token is refused.
    """

    def get_route_handler(self):  # type: ignore[no-untyped-def]
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handle(request)
            except SignInRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                url = "/login" + (
                    f"?next={quote(target, safe='')}" if target not in ("/", "/apps") else ""
                )
                response = redirect(request, url)
            except FormRefused:
                response = _error_page(
                    request,
                    403,
                    "Form expired",
                    "This form has expired or did not come from this site, so nothing was done. "
                    "Go back, reload the page and try again.",
                )
            except ApiError as error:
                status = 404 if error.code in NOT_FOUND_CODES else 400
                response = _error_page(request, status, "Something is not right", error.description)
            except RequestValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in error.errors()
                )
                response = _error_page(
                    request, 400, "Bad request", f"The request is not valid ({problems})."
                )
            except MultiPartException as error:
                response = _error_page(
                    request, 400, "Upload failed", f"The upload could not be read: {error.message}."
                )
            except Exception:
                log.exception("web page %s %s failed", request.method, request.url.path)
                response = _error_page(
                    request,
                    500,
                    "Server error",
                    "Something went wrong on the server; the details are in the server log.",
                )
            finally:
                form = getattr(request.state, "form", None)
                if form is not None:
                    await form.close()
            _keep_session(request, response)
            return response

        return route


def _keep_session(request: Request, response: Response) -> None:
    session: WebSession | None = getattr(request.state, "session", None)
    if session is None:
        return
    if asdict(session) == getattr(request.state, "session_loaded", None):
        return
    web: WebContext = request.state.web
    if session.expires_at <= 0:  # signed out
        response.delete_cookie(sessions.COOKIE, path="/")
        return
    response.set_cookie(
        sessions.COOKIE,
        sessions.encode(web.env, session),
        max_age=max(int(session.expires_at - time.time()), 0),
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


# ---- dependencies -----------------------------------------------------------------------------


def web_context(request: Request) -> WebContext:
    return request.state.web  # type: ignore[no-any-return]


async def load_session(request: Request) -> WebSession:
    """The session of the cookie (a new anonymous one when there is none); on POST, the form is
    read here and its CSRF token checked against the session's."""
    web: WebContext = request.state.web
    session = sessions.decode(web.env, request.cookies.get(sessions.COOKIE))
    request.state.session_loaded = asdict(session) if session else None
    request.state.session = session or WebSession()
    if request.method == "POST":
        form = await request.form(
            max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_PART_BYTES
        )
        request.state.form = form
        sent = request.headers.get(sessions.CSRF_HEADER) or form.get(sessions.CSRF_FIELD)
        if session is None or not session.csrf_matches(sent if isinstance(sent, str) else None):
            raise FormRefused()
    return request.state.session  # type: ignore[no-any-return]


def signed_in(
    request: Request, session: Annotated[WebSession, Depends(load_session)]
) -> auth.Principal:
    """The signed-in person; re-checked on every request, so a revoked key ends the session."""
    if not session.signed_in:
        raise SignInRequired()
    web: WebContext = request.state.web
    try:
        return auth.authenticate(web.env, f"Key {session.token}")
    except ApiError as error:
        request.state.session = WebSession(flash=error.description)
        raise SignInRequired() from None


def current_app(
    app_id: str, request: Request, principal: Annotated[auth.Principal, Depends(signed_in)]
) -> AppScope:
    web: WebContext = request.state.web
    scope = auth.resolve_app(web.env, principal, principal.user_id, app_id)
    request.state.app_id = scope.app_id
    return scope


def read_form(request: Request, _: Annotated[WebSession, Depends(load_session)]) -> FormData:
    return getattr(request.state, "form", None) or FormData()


Web = Annotated[WebContext, Depends(web_context)]
Session = Annotated[WebSession, Depends(load_session)]
SignedIn = Annotated[auth.Principal, Depends(signed_in)]
CurrentApp = Annotated[AppScope, Depends(current_app)]
Form = Annotated[FormData, Depends(read_form)]
