"""A small REST client for the uniform Job resource of any service (CLI and service-to-service)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tango.spec import JobPublic


class ServiceError(Exception):
    """A service answered with a problem (or not at all); the message is the problem's detail."""

    def __init__(self, message: str, status: int | None = None, detail: str | None = None):
        super().__init__(message)
        self.status = status
        self.detail = detail or message


class ServiceClient:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 10.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(f"{self.base_url} did not answer {method} {path}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ServiceError(f"{method} {self.base_url}{path} -> {resp.status_code}: {detail}",
                               resp.status_code, str(detail))
        return resp.json()

    def create_job(self, kind: str, params: dict[str, Any] | None = None) -> JobPublic:
        return JobPublic.model_validate(self.request("POST", "/jobs", json={"kind": kind, "params": params or {}}))

    def get_job(self, job_id: str) -> JobPublic:
        return JobPublic.model_validate(self.request("GET", f"/jobs/{job_id}"))

    def cancel_job(self, job_id: str) -> JobPublic:
        return JobPublic.model_validate(self.request("POST", f"/jobs/{job_id}/cancel"))

    def wait_job(self, job_id: str, *, timeout: float = 600.0, poll: float = 0.5,
                 on_update: Callable[[JobPublic], None] | None = None) -> JobPublic:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if on_update:
                on_update(job)
            if job.state.terminal:
                return job
            if time.monotonic() > deadline:
                raise ServiceError(f"job {job_id} still {job.state.value} after {timeout:.0f} s")
            time.sleep(poll)
