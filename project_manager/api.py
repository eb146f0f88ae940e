"""project_manager's REST API (routes only); serves the built web UI at `/` when present."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from project_manager import __doc__ as DESCRIPTION
from project_manager import auth, project_routes
from project_manager.device_routes import agent_router
from project_manager.device_routes import router as devices_router
from project_manager.runtime import build_runtime
from tango.settings import Settings
from tango.web import create_service_app

# Dataset uploads stream through to the labelling service under its own size limit.
UPLOADS = re.compile(r"/projects/[^/]+/labelling/imports")
WEB_DIST = Path(__file__).resolve().parent.parent / "web_ui" / "dist"

_NO_UI = """<!doctype html><html><head><meta charset="utf-8"><title>Tango</title></head>
<body><h1>Tango</h1><p>The web UI has not been built (<code>web_ui/dist</code> is missing).
The REST API is at <a href="/docs">/docs</a>.</p></body></html>"""


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app(build_runtime(settings), description=DESCRIPTION or "", guard=auth.guard,
                             routers=[auth.router, project_routes.router, devices_router, agent_router],
                             streamed=lambda path: UPLOADS.fullmatch(path) is not None)
    if (WEB_DIST / "index.html").is_file():
        app.mount("/", StaticFiles(directory=WEB_DIST, html=True), name="web_ui")
    else:
        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        def no_ui() -> str:
            return _NO_UI
    return app


app = create_app()
