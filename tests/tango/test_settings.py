from pathlib import Path

import pytest
from pydantic import ValidationError

from tango.settings import Settings


def test_defaults_serve_the_embedded_runner(tmp_path: Path):
    s = Settings(home=tmp_path)
    assert s.database_url_for("labelling") == f"sqlite:///{tmp_path}/db/labelling.sqlite3"
    assert s.database_url_for("autonn") != s.database_url_for("labelling")
    assert s.broker_url == "filesystem://"
    assert s.store_url == (tmp_path / "store").as_uri()
    assert s.service_url("autonn") == "http://127.0.0.1:8082"


def test_environment_overrides_with_the_tango_prefix(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TANGO_DATABASE_URL", "postgresql+psycopg://u@db/tango")
    monkeypatch.setenv("TANGO_REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("TANGO_LABELLING_URL", "http://labelling:8081/")
    s = Settings()
    assert s.database_url_for("labelling") == s.database_url_for("autonn") == "postgresql+psycopg://u@db/tango"
    assert s.broker_url == "redis://r:6379/0"
    assert s.service_url("labelling") == "http://labelling:8081"


def test_production_refuses_to_start_without_secrets(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TANGO_ENV", "production")
    with pytest.raises(ValidationError, match="TANGO_SERVICE_TOKEN"):
        Settings()
    monkeypatch.setenv("TANGO_SERVICE_TOKEN", "s3cret")
    monkeypatch.setenv("TANGO_DATABASE_URL", "postgresql+psycopg://u@db/tango")
    assert Settings().env == "production"


def test_stale_threshold_must_exceed_heartbeat():
    with pytest.raises(ValidationError, match="STALE_AFTER"):
        Settings(heartbeat_seconds=10, stale_after_seconds=5)
