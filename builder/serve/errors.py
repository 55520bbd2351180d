"""Errors of the API: ``ApiError`` and the middleware that turns every failure into Docker's
``{"message": "..."}`` body with Docker's status code.

Library errors map by kind: not found -> 404, conflict / in use -> 409, bad input -> 400,
anything else -> 500. An unknown endpoint is 404 ``page not found``, as dockerd answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from builder import errors as berr
from registry import errors as rerr

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


_CONFLICT_WORDS = ("in use", "already", "conflict", "is running", "is being used",
                   "is paused", "not running", "is not running", "has active endpoints")
_BAD_INPUT = (rerr.InvalidReference, rerr.DigestError, rerr.InvalidManifest, rerr.ArchiveError,
              berr.DockerfileSyntaxError, berr.ExpansionError, berr.IgnorePatternError,
              berr.ContextError, berr.PlanError)


def status_of(exc: BaseException) -> int:
    """Docker's status code for a library error."""
    if isinstance(exc, ApiError):
        return exc.status
    text = str(exc).lower()
    if isinstance(exc, rerr.NotFound) or type(exc).__name__.startswith("NoSuch"):
        return 404
    if isinstance(exc, (rerr.Unauthorized, rerr.Denied, rerr.CredentialHelperError)):
        # dockerd answers a registry's refusal with 401/403 passed through as 500 in old
        # versions; clients only show the message, so keep the meaningful code
        return 401 if isinstance(exc, rerr.Unauthorized) else 403
    if isinstance(exc, _BAD_INPUT):
        return 400
    if isinstance(exc, (berr.BuildError, rerr.StoreError)):
        if text.startswith("no such") or ": no such" in text or "not found" in text:
            return 404
        if any(w in text for w in _CONFLICT_WORDS):
            return 409
        if text.startswith("invalid") or "bad format" in text:
            return 400
        if isinstance(exc, (berr.ContainerError, berr.NetworkError, berr.VolumeError)) and (
                "invalid" in text or "must" in text or "bad " in text):
            return 400
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
