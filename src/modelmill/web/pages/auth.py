"""Signing in with a personal access token, and signing out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from modelmill.domain.errors import ApiError
from modelmill.services import auth
from modelmill.web.core import (
    Form,
    Session,
    Web,
    WebRoute,
    form_error,
    redirect,
    render,
    take_flash,
)
from modelmill.web.session import WebSession

router = APIRouter(route_class=WebRoute)


def _local(target: str) -> str:
    """Only paths on this site are followed after sign-in (no open redirects)."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/apps"


@router.get("/")
def home(request: Request, session: Session) -> Response:
    return redirect(request, "/apps" if session.signed_in else "/login")


@router.get("/login")
def login_page(
    request: Request, session: Session, next: str = "", signed_out: bool = False
) -> Response:
    message = "You are signed out." if signed_out else ""
    return render(
        request,
        "login.html",
        next=_local(next) if next else "",
        error=take_flash(request),
        message=message,
    )


@router.post("/login")
def login(request: Request, web: Web, form: Form) -> Response:
    token = str(form.get("token") or "").strip()
    target = _local(str(form.get("next") or "/apps"))
    try:
        if not token:
            raise form_error("Paste your personal access token to sign in.")
        principal = auth.authenticate(web.env, f"Key {token}")
    except ApiError as error:
        return render(request, "login.html", 400, next=target, error=error.description)
    request.state.session = WebSession.sign_in(token, principal.user_id)
    return redirect(request, target)


@router.post("/logout")
def logout(request: Request, session: Session) -> Response:
    session.expires_at = 0  # the route class deletes the cookie
    return redirect(request, "/login?signed_out=1")
