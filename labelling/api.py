"""labelling's REST API (routes only): health, readiness and the uniform Job resource."""

from __future__ import annotations

from fastapi import FastAPI

from labelling import __doc__ as DESCRIPTION
from labelling.runtime import build_runtime
from tango.settings import Settings
from tango.web import create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(build_runtime(settings), description=DESCRIPTION or "")


app = create_app()
