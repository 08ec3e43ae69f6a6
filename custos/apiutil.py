"""Shared pieces of the sidecar's own (non-hot-path) HTTP APIs on FastAPI: the History API
(``sidecar.history``), the alerting admin API (``alerting.api``) and ``GET /admin/audit/recent``
(``sidecar.audit.recent``).

- :class:`ApiError` and :func:`error_response`: errors in OpenAI's shape,
  ``{"error": {"message", "type", "param", "code"}}``;
- :func:`install_error_handlers`: every error a FastAPI app answers in that shape, request validation
  errors as 400 naming the parameter (not FastAPI's 422 ``detail`` list);
- :class:`ErrorGuard`: an ASGI wrapper that answers an unexpected exception with that shape's 500 and
  does not let it escape (Starlette re-raises after its own 500), for apps whose callers (the sidecar's
  mounted-app terminal, tests) expect an answer, never an exception;
- :func:`scope_identity`: the caller the sidecar's pipeline authenticated (``scope["custos.identity"]``).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """An answer in OpenAI's error shape. ``error_type`` (class attribute) overrides the type derived
    from the status (``authentication_error``, ``permission_error``, ``invalid_request_error``,
    ``server_error``)."""

    error_type: str | None = None

    def __init__(self, status: int, message: str, code: str | None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_type(status: int) -> str:
    return {401: "authentication_error", 403: "permission_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )


def error_body(
    status: int, message: str, code: str | None, param: str | None = None, type: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type or error_type(status), "param": param, "code": code}}


def error_response(
    status: int, message: str, code: str | None, param: str | None = None, type: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param, type), status_code=status)


def json_response(body: Any, status: int = 200) -> Response:
    """``body`` serialized with orjson as it is (no response-model pass: the same bytes the
    hand-written ASGI apps sent; NaN and infinities become null)."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def api_error_response(exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.code, exc.param, exc.error_type)


def validation_param(errors: Any) -> tuple[str | None, str]:
    """(the parameter, pydantic's message) of the first validation error."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")]
    return (loc[-1] if loc else None), str(first.get("msg", "invalid"))


def new_api(
    title: str,
    module_doc: str | None,
    *,
    openapi_url: str | None,
    internal_message: str,
    log: logging.Logger,
    what: str,
    redirect_slashes: bool = True,
) -> FastAPI:
    """A FastAPI app for one of the sidecar's own APIs: described by its module's first paragraph,
    no interactive docs pages, and the OpenAI-shaped error handlers installed."""
    api = FastAPI(
        title=title,
        version="1",
        description=(module_doc or "").split("\n\n", 1)[0],
        openapi_url=openapi_url,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=redirect_slashes,
    )
    install_error_handlers(api, internal_message=internal_message, log=log, what=what)
    return api


def install_error_handlers(api: FastAPI, *, internal_message: str, log: logging.Logger, what: str) -> None:
    """OpenAI-shaped answers for :class:`ApiError`, request validation (400, ``invalid_parameter``,
    ``param`` names it), HTTP errors (404, 405) and anything unexpected (500 ``internal_message``)."""

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return api_error_response(exc)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        param, msg = validation_param(exc.errors())
        return error_response(400, f"{param}: {msg}.", "invalid_parameter", param)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, str(exc.detail), code)

    @api.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s: %s %s failed", what, request.method, request.url.path)
        return error_response(500, internal_message, "internal")


REQUEST_PATH = "custos.request_path"


class ErrorGuard:
    """Runs an ASGI app; an exception it raises is answered with a 500 in OpenAI's shape if nothing was
    sent yet (else only logged when ``log_sent``), and never propagates. Only HTTP requests are passed
    on (no lifespan: the sidecar runs its own), with trailing slashes stripped from the path (the
    hand-written apps served ``/x/`` as ``/x``); the path as requested is kept in
    ``scope["custos.request_path"]`` for error messages."""

    def __init__(
        self, app: Any, *, internal_message: str, log: logging.Logger, what: str, log_sent: bool = False
    ) -> None:
        self.app = app
        self.internal_message = internal_message
        self.log = log
        self.what = what
        self.log_sent = log_sent

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            return
        path = scope.get("path", "")
        scope = {**scope, "path": path.rstrip("/") or "/", REQUEST_PATH: path}
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if started:  # Starlette's ServerErrorMiddleware answered (and logged) already, then re-raised
                if self.log_sent:
                    self.log.exception("%s failed", self.what)
                return
            self.log.exception("%s failed", self.what)
            await error_response(500, self.internal_message, "internal")(scope, receive, send)


def request_path(request: Request) -> str:
    """The path as the client sent it (before :class:`ErrorGuard` stripped a trailing slash)."""
    return str(request.scope.get(REQUEST_PATH, request.scope.get("path", "")))


def scope_identity(request: Request) -> Any:
    """The caller the sidecar's pipeline authenticated, or None (identity stage off, or not mounted
    behind the pipeline)."""
    return request.scope.get("custos.identity")
