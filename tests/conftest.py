from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.factories import PG_ADMIN_URL, REDIS_BASE, make_settings


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No test may read the developer's TANGO_* settings or write under ~/.tango.
    for key in list(os.environ):
        if key.startswith("TANGO_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TANGO_HOME", str(tmp_path / "home"))


@pytest.fixture
def settings(tmp_path: Path):
    return make_settings(tmp_path / "home")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards (tests share no rows)."""
    name = f"tango_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not answering at {PG_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database number of its own, emptied first (queues are shared by name)."""
    url = f"{REDIS_BASE}/13"
    try:
        redis.Redis.from_url(url, socket_timeout=5).flushdb()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not answering at {url}: {exc}")
    return url
