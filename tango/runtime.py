"""One service's wiring: settings, database, store, jobs, job kinds and Celery app, built lazily."""

from __future__ import annotations

from functools import cached_property

from celery import Celery
from sqlalchemy import Table

from tango.db import Database
from tango.jobs import JobKinds, JobRepository
from tango.queue import make_celery, register_runner, task_name
from tango.settings import Settings, get_settings
from tango.spec import SERVICES
from tango.store import Store


class ServiceRuntime:
    def __init__(self, service: str, *, table: Table, kinds: JobKinds, settings: Settings | None = None):
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}")
        self.service = service
        self.spec = SERVICES[service]
        self.table = table
        self.kinds = kinds
        self.settings = settings or get_settings()

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.database_url_for(self.service), service=self.service)

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.store_url)

    @cached_property
    def jobs(self) -> JobRepository:
        return JobRepository(self.db, self.table)

    @cached_property
    def celery_app(self) -> Celery:
        app = make_celery(self.service, self.settings)
        register_runner(app, self)
        return app

    def migrate(self) -> None:
        self.db.migrate(package=self.service)

    def enqueue(self, job_id: str) -> None:
        self.celery_app.send_task(task_name(self.service), args=[job_id], queue=self.spec.queue)

    def check_broker(self) -> None:
        with self.celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            # The filesystem transport "connects" to anything: prove its folder takes a write.
            if not self.settings.redis_url:
                probe = self.settings.broker_folder / "queue" / ".probe"
                probe.write_bytes(b"ok")
                probe.unlink()
