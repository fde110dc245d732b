"""Jinja2 set-up for the pages: the template folder, the filters the templates use (statuses,
durations, numbers) and the values every page gets (the CSRF token, who is signed in)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from fastapi.templating import Jinja2Templates
from starlette.requests import Request

from modelmill.domain import model_versions as lifecycle
from modelmill.web.detection_view import detection_view
from modelmill.web.evaluation import evaluation_view

WEB_DIR = Path(__file__).parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
STATIC_PREFIX = "/static"

_STATUS_WORDS = {
    codes.MODEL_QUEUED_FOR_TRAINING: ("Queued", "queued"),
    codes.MODEL_TRAINING: ("Training", "training"),
    codes.MODEL_TRAINED: ("Trained", "ok"),
    codes.MODEL_UNTRAINED: ("Untrained", "idle"),
    codes.MODEL_EXPORT_PENDING: ("Export queued", "queued"),
    codes.MODEL_EXPORTING: ("Exporting", "training"),
    codes.MODEL_EXPORTED: ("Exported", "ok"),
    codes.MODEL_EXPORTING_FAILED: ("Export failed", "failed"),
}


def status_label(code: int) -> str:
    """'Trained', 'Training', 'Failed'... for a status code; the code's name when unknown."""
    if code in _STATUS_WORDS:
        return _STATUS_WORDS[code][0]
    if code in lifecycle.FAILURES:
        return "Failed"
    return codes.StatusCode.Name(code).replace("_", " ").capitalize()


def status_class(code: int) -> str:
    if code in _STATUS_WORDS:
        return _STATUS_WORDS[code][1]
    return "failed" if code in lifecycle.FAILURES else "idle"


def is_running(code: int) -> bool:
    return code in (lifecycle.QUEUED, lifecycle.TRAINING)


def duration(seconds: float | None) -> str:
    """'45 s', '3 min 20 s', '2 h 5 min': a time left or taken, for people."""
    if seconds is None:
        return ""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def number(value: Any, digits: int = 3) -> str:
    """A metric for a table: floats to `digits` places, missing as an en dash."""
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def count(value: Any) -> int:
    """A metrics count, bare or in its UInt64Value JSON form {"value": n}; 0 when missing."""
    if isinstance(value, dict):
        value = value.get("value", 0)
    return int(value or 0)


def byte_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)


def url_part(value: str) -> str:
    return quote(str(value), safe="")


@cache
def _static_version() -> str:
    """Changes whenever a static file does, so browsers fetch new CSS/JS after an upgrade."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def static_url(name: str) -> str:
    return f"{STATIC_PREFIX}/{name}?v={_static_version()}"


def _page_values(request: Request) -> dict[str, Any]:
    session = getattr(request.state, "session", None)
    return {
        "csrf_token": session.csrf if session else "",
        "signed_in_user": session.user_id if session and session.signed_in else "",
    }


def create_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES_DIR, context_processors=[_page_values])
    environment = templates.env
    environment.trim_blocks = True
    environment.lstrip_blocks = True
    environment.filters.update(
        status_label=status_label,
        status_class=status_class,
        duration=duration,
        number=number,
        byte_size=byte_size,
        count=count,
        url_part=url_part,
    )
    environment.tests["running"] = is_running
    environment.tests["trained"] = lambda code: code == lifecycle.TRAINED
    # Views the task partials (templates/partials/) build from a version's EvalMetrics.
    environment.globals.update(
        static_url=static_url, classification_view=evaluation_view, detection_view=detection_view
    )
    return templates
