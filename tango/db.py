"""SQLAlchemy engine per service and its Alembic migrations (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Several processes share one SQLite file (API and worker): WAL lets readers run beside
        # the writer, busy_timeout makes a writer wait instead of failing. Connections are pooled
        # (each is used by one thread at a time, so check_same_thread is off): opening one per
        # transaction cost ~0.4 ms, and a request makes several.
        engine = create_engine(url, pool_size=8, max_overflow=40, pool_timeout=60,
                               connect_args={"timeout": 30, "check_same_thread": False})
        wal: list[bool] = []

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            if not wal:  # persistent in the file: once per process is enough
                cur.execute("PRAGMA journal_mode=WAL")
                wal.append(True)
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


class Database:
    def __init__(self, url: str, *, service: str):
        self.url = url
        self.service = service
        self.engine = make_engine(url)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def check(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def migrate(self, *, package: str) -> None:
        """Upgrade this service's tables to head. Each service keeps its own Alembic history
        (its own version table), so services sharing one PostgreSQL database never collide."""
        cfg = Config()
        cfg.set_main_option("script_location", f"{package}:migrations")
        cfg.attributes["version_table"] = f"alembic_version_{self.service}"
        with self.engine.begin() as conn:
            if self.is_postgres:
                # An API and a worker starting together must not both create the tables.
                key = zlib.crc32(f"tango-migrate-{self.service}".encode())
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()


def run_migrations_env(context, target_metadata: MetaData) -> None:  # noqa: ANN001
    """Body of every service's `migrations/env.py` (online mode on the connection given)."""
    config = context.config
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=config.attributes["version_table"],
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
