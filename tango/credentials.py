"""The CLI's project_manager token: TANGO_TOKEN, else TANGO_HOME/credentials.json, else (in
development only) a local account made on first use."""

from __future__ import annotations

import json
import os
import secrets

import httpx

from tango.client import ServiceClient, ServiceError
from tango.settings import Settings

DEV_USER = "tango"


def credentials_path(settings: Settings):  # noqa: ANN201
    return settings.home / "credentials.json"


def save_token(settings: Settings, *, username: str, token: str) -> None:
    path = credentials_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": settings.project_manager_url, "username": username, "token": token}, f)


def login(settings: Settings, *, username: str, password: str) -> str:
    with ServiceClient(settings.project_manager_url) as pm:
        token = pm.request("POST", "/auth/token", json={"username": username, "password": password,
                                                        "name": "tango cli"})["token"]
    save_token(settings, username=username, token=token)
    return token


def user_token(settings: Settings) -> str:
    if token := os.environ.get("TANGO_TOKEN"):
        return token
    path = credentials_path(settings)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("url") == settings.project_manager_url and _valid(settings, saved["token"]):
            return saved["token"]
    if settings.env != "development":
        raise ServiceError("no credentials: run `tango login` (or set TANGO_TOKEN)")
    password = secrets.token_urlsafe(18)
    username = f"{DEV_USER}-{secrets.token_hex(3)}"
    with ServiceClient(settings.project_manager_url) as pm:
        pm.request("POST", "/auth/register", json={"username": username, "password": password})
    token = login(settings, username=username, password=password)
    return token


def _valid(settings: Settings, token: str) -> bool:
    try:
        resp = httpx.get(f"{settings.project_manager_url}/auth/me", headers={"Authorization": f"Bearer {token}"},
                         timeout=5)
    except httpx.HTTPError:
        return True  # the server is down; let the real call report that
    return resp.status_code == 200
