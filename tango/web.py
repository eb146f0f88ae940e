"""The FastAPI app shape every service shares: health, readiness, problem+json errors, body
limits, the service token, and the Job routes."""

from __future__ import annotations

import logging
import secrets
from http import HTTPStatus
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tango import __version__
from tango.jobs import jobs_router
from tango.runtime import ServiceRuntime
from tango.spec import Health, Problem

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})


def problem(status: int, detail: str, *, title: str | None = None, instance: str | None = None,
            errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(title=title or HTTPStatus(status).phrase, status=status, detail=detail,
                   instance=instance, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM,
                        headers=headers)


class BodyLimit:
    """Refuse request bodies over the limit, whether or not they announce their length. The body
    is read (at most the limit) before the app sees it, so a refusal is a clean 413."""

    def __init__(self, app: ASGIApp, max_bytes: int, streamed: Callable[[str], bool] | None = None):
        self.app, self.max_bytes, self.streamed = app, max_bytes, streamed or (lambda _path: False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        if self.streamed(scope.get("path", "")):
            # Upload routes stream the body to disk themselves, under their own size limit.
            return await self.app(scope, receive, send)
        too_big = problem(413, f"request body is larger than the {self.max_bytes}-byte limit",
                          instance=scope.get("path"))
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await too_big(scope, receive, send)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await too_big(scope, receive, send)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def get_runtime(request: Request) -> ServiceRuntime:
    # async: a sync dependency costs a thread-pool hop per request for a plain attribute read
    return request.app.state.runtime


# Routes of a service take `runtime: RuntimeDep` to reach its settings, DB, store and jobs.
RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]


def _install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), instance=request.url.path,
                       headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(400, "the request body is not valid JSON", instance=request.url.path,
                           errors=errors)
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return problem(422, f"the request is not valid: {detail}", instance=request.url.path,
                       errors=errors)

    @app.exception_handler(OperationalError)
    async def db_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return problem(503, "the database is not answering; try again shortly",
                       instance=request.url.path, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(500, "an internal error occurred; the service log has the details",
                       instance=request.url.path)


def is_service_call(request: Request, runtime: ServiceRuntime) -> bool:
    expected = runtime.settings.service_token
    given = request.headers.get("authorization", "")
    return bool(expected) and secrets.compare_digest(given.encode(), f"Bearer {expected}".encode())


def service_token_guard(runtime: ServiceRuntime) -> Callable[[Request], None]:
    def guard(request: Request) -> None:
        if not runtime.settings.service_token or request.url.path in OPEN_PATHS:
            return
        if not is_service_call(request, runtime):
            raise HTTPException(401, detail="this service needs 'Authorization: Bearer <service token>'",
                                headers={"WWW-Authenticate": "Bearer"})
    return guard


def create_service_app(runtime: ServiceRuntime, *, routers: list[APIRouter] = (),
                       description: str = "", migrate: bool = True,
                       guard: Callable[..., Any] | None = None,
                       streamed: Callable[[str], bool] | None = None) -> FastAPI:
    """`guard` is the app-wide auth dependency; by default only the internal service token
    (when one is configured) opens the service. `streamed(path)` names the upload routes that
    enforce their own (larger) body limit while streaming to disk."""
    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        if migrate:
            await run_in_threadpool(runtime.migrate)
        yield
        runtime.db.dispose()

    app = FastAPI(title=f"Tango {runtime.spec.title}", version=__version__, description=description,
                  lifespan=lifespan, dependencies=[Depends(guard or service_token_guard(runtime))])
    app.state.runtime = runtime
    _install_problem_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.max_body_bytes, streamed=streamed)

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        return Health(service=runtime.service, status="ok")

    @app.get("/readyz", response_model=Health, tags=["health"],
             responses={503: {"model": Problem, "content": {PROBLEM: {}}}})
    def readyz() -> Any:
        checks: dict[str, str] = {}
        for name, check in (("database", lambda: runtime.db.check()), ("broker", runtime.check_broker),
                            ("store", lambda: runtime.store.check())):
            try:
                check()
                checks[name] = "ok"
            except Exception as exc:  # readiness reports every failing part, not just the first
                checks[name] = f"{type(exc).__name__}: {exc}"[:300]
        if all(v == "ok" for v in checks.values()):
            return Health(service=runtime.service, status="ready", checks=checks)
        failing = ", ".join(f"{k} ({v})" for k, v in checks.items() if v != "ok")
        return problem(503, f"{runtime.service} is not ready: {failing}", instance="/readyz")

    app.include_router(jobs_router(runtime))
    for router in routers:
        app.include_router(router)
    return app
