"""Errors: every failure the server reports is a `StratusError` carrying its
`code` and `message` (the API's `{"error": {"code", "message"}}`) and the
HTTP status; the common codes have classes of their own."""

from __future__ import annotations

from typing import Any, Dict, Optional


class StratusError(Exception):
    """An error the server answered with, or one reaching it."""

    def __init__(self, code: str, message: str, status: Optional[int] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class ConnectError(StratusError):
    """The server could not be reached."""


class BadRequest(StratusError):
    """The request was invalid (400); nothing was changed."""


class Unauthorized(StratusError):
    """No live token (401)."""


class Forbidden(StratusError):
    """The token's role does not allow the request (403)."""


class NotFound(StratusError):
    """No such function, invocation, job, object, ... (404)."""


class Conflict(StratusError):
    """The request conflicts with what is there (409)."""


class Gone(StratusError):
    """What was asked for is no longer kept (410): a purged output, say."""


class QuotaExceeded(StratusError):
    """Over one of the project's quotas (422); nothing was created."""


class Unavailable(StratusError):
    """The server cannot serve the request now (503)."""


class FunctionFailed(StratusError):
    """A function's invocation failed or timed out. `invocation` is the
    invocation as the server describes it; `logs_tail` the end of its stderr."""

    def __init__(
        self,
        code: str,
        message: str,
        status: Optional[int] = None,
        invocation: Optional[Dict[str, Any]] = None,
        logs_tail: str = "",
    ) -> None:
        super().__init__(code, message, status)
        self.invocation = invocation or {}
        self.logs_tail = logs_tail


_BY_STATUS = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: QuotaExceeded,
    503: Unavailable,
}


def from_response(status: int, body: bytes) -> StratusError:
    """The error an answer of the server stands for."""
    import json

    try:
        parsed = json.loads(body)
        detail = parsed["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        return StratusError("http", body[:500].decode("utf-8", "replace"), status)
    if "invocation" in parsed:
        return FunctionFailed(code, message, status, parsed.get("invocation"), parsed.get("logs_tail", ""))
    return _BY_STATUS.get(status, StratusError)(code, message, status)
