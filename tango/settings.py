"""One settings class for every service and the CLI (prefix TANGO_). Defaults serve the embedded runner."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tango.spec import SERVICES


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANGO_", extra="ignore")

    env: Literal["development", "production"] = "development"
    home: Path = Field(default_factory=lambda: Path.home() / ".tango")
    # Unset: each service gets its own SQLite file under `home` (no server to install).
    database_url: str | None = None
    # Unset: Celery uses kombu's filesystem transport under `home` (no server to install).
    redis_url: str | None = None
    # fsspec URL of the artifact store; unset: a folder under `home`.
    store: str | None = None

    project_manager_url: str = f"http://127.0.0.1:{SERVICES['project_manager'].port}"
    labelling_url: str = f"http://127.0.0.1:{SERVICES['labelling'].port}"
    autonn_url: str = f"http://127.0.0.1:{SERVICES['autonn'].port}"
    deploy_codegen_url: str = f"http://127.0.0.1:{SERVICES['deploy_codegen'].port}"

    service_token: str | None = None
    # Self-service sign-up on project_manager; unset: allowed in development only. The first
    # user can always register (and becomes the admin).
    allow_signup: bool | None = None

    max_body_bytes: int = 1 << 20
    # Upload routes (dataset zips) stream to disk under this limit instead.
    max_upload_bytes: int = 4 << 30
    # A running job writes a heartbeat this often; one silent for `stale_after_seconds`
    # is taken to have lost its worker and is handed back to the queue.
    heartbeat_seconds: float = 5.0
    stale_after_seconds: float = 30.0
    # Redis redelivers an unacknowledged task (acks_late) after this long.
    visibility_timeout: float = 3600.0
    worker_concurrency: int = 2
    sse_poll_seconds: float = 0.5
    # Profiling agents: a lease lasts this long (the agent beats every quarter of it); a task
    # leased this many times without results fails with the reason.
    agent_lease_seconds: float = 60.0
    agent_max_attempts: int = 3
    # autonn waits this long for a device's measurements, checking this often.
    measurement_timeout_seconds: float = 3600.0
    measurement_poll_seconds: float = 1.0

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> Settings:
        if self.env == "production":
            missing = [
                name
                for name, value in (
                    ("TANGO_SERVICE_TOKEN", self.service_token),
                    ("TANGO_DATABASE_URL", self.database_url),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"TANGO_ENV=production needs {', '.join(missing)} set in the environment; "
                    "there are no default secrets outside development"
                )
        if self.stale_after_seconds <= self.heartbeat_seconds:
            raise ValueError("TANGO_STALE_AFTER_SECONDS must exceed TANGO_HEARTBEAT_SECONDS")
        return self

    @property
    def signup_open(self) -> bool:
        return self.allow_signup if self.allow_signup is not None else self.env == "development"

    def service_url(self, service: str) -> str:
        return getattr(self, f"{service}_url").rstrip("/")

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'db' / f'{service}.sqlite3'}"

    @property
    def store_url(self) -> str:
        return self.store or (self.home / "store").as_uri()

    @property
    def broker_url(self) -> str:
        return self.redis_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"


@lru_cache
def get_settings() -> Settings:
    return Settings()
