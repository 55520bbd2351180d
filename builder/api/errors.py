"""Errors of the API: ``ApiError`` and the middleware that turns every failure into Docker's
``{"message": "..."}`` body with Docker's status code.

Library errors map by their ``kind`` (``registry.kinds.ErrorKind``) through ``HTTP_STATUS``:
not found -> 404, conflict -> 409, invalid -> 400, … anything else -> 500. An unknown endpoint
is 404 ``page not found``, as dockerd answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from builder.base import errors as berr
from registry import errors as rerr
from registry.kinds import ErrorKind

log = logging.getLogger("pybuild.serve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer: HTTP *status* and a one-line *message*."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def conflict(message: str) -> ApiError:
    return ApiError(409, message)


#: an error's kind -> Docker's status code: the one table (moby's errdefs -> HTTP)
HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.INVALID: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.UNAVAILABLE: 500,  # dockerd answers a registry it cannot reach with 500
    ErrorKind.CANCELLED: 500,
    ErrorKind.FAILED: 500,
    ErrorKind.SYSTEM: 500,
}


def status_of(exc: BaseException) -> int:
    """Docker's status code for a library error, by its kind."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, (berr.BuildError, rerr.RegistryError)):
        return HTTP_STATUS[exc.kind]
    if isinstance(exc, ValueError):
        return 400
    return 500


def message_of(exc: BaseException) -> str:
    """The one-line message of an error (a Dockerfile error keeps its ``file:line:col``)."""
    return str(exc) or type(exc).__name__


def error_response(status: int, message: str) -> web.Response:
    # exactly ``application/json``, as dockerd: the Go client reads the message out of the body
    # only for that type (with ``; charset=utf-8`` the CLI prints the raw JSON)
    return web.Response(body=json.dumps({"message": message}).encode() + b"\n", status=status,
                        content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer as ``{"message": ...}`` JSON."""
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.message)
    except web.HTTPNotFound:
        return error_response(404, "page not found")
    except web.HTTPMethodNotAllowed:
        return error_response(405, "method not allowed")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error_response(e.status, e.text or e.reason)
    except (berr.BuildError, rerr.RegistryError, ValueError, OSError) as e:
        status = status_of(e)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.path, e)
        return error_response(status, message_of(e))
    except Exception as e:  # a bug of ours: the client still gets Docker's shape
        log.exception("%s %s", request.method, request.path)
        return error_response(500, message_of(e))
