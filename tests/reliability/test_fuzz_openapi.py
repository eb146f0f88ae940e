"""Schemathesis against every service's own OpenAPI, in process (ASGI), with a bounded number of
generated requests per operation: nothing answers 500, and every error (4xx or 5xx) is
application/problem+json with a detail a person can read.

Each service runs on an isolated home (SQLite, filesystem broker, no worker); project_manager is
called with a signed-in user's token, the others with the service token. project_manager's
labelling pass-through has no labelling service behind it here, so it answers 502/503 (as
problem+json), which is allowed; 500 never is."""

from __future__ import annotations

import importlib

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings as hsettings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tango.settings import Settings
from tango.spec import SERVICES

PROBLEM = "application/problem+json"
TOKEN = "fuzz-service-token"
EXAMPLES = 10  # per operation, valid and invalid requests mixed; ~130 operations in all keep the whole test well under a minute


def _app_and_headers(service: str, home) -> tuple[object, dict[str, str]]:  # noqa: ANN001
    settings = Settings(home=home, service_token=TOKEN)
    app = importlib.import_module(f"{service}.api").create_app(settings)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app) as client:  # runs the lifespan: migrations
        if service == "project_manager":
            creds = {"username": "fuzz", "password": "correct horse"}
            assert client.post("/auth/register", json=creds).status_code == 201
            headers = {"Authorization": f"Bearer {client.post('/auth/token', json=creds).json()['token']}"}
    return app, headers


def _check(case, response) -> str | None:  # noqa: ANN001
    where = f"{case.method} {case.formatted_path} query={case.query!r} body={str(case.body)[:200]!r}"
    if response.status_code == 500:
        return f"500 on {where}: {response.text[:300]}"
    if response.status_code >= 400:
        ctype = response.headers.get("content-type", [""])
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        if not ctype.startswith(PROBLEM):
            return f"{response.status_code} with content-type {ctype!r} on {where}: {response.text[:200]}"
        body = response.json()
        if body.get("status") != response.status_code or not body.get("detail"):
            return f"problem body without status/detail on {where}: {body}"
    return None


@pytest.mark.parametrize("service", list(SERVICES))
def test_openapi_fuzz(service, tmp_path):
    app, headers = _app_and_headers(service, tmp_path / "home")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"{service} publishes no operations"
    for operation in operations:
        @hsettings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                   phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                             operation.as_strategy(GenerationMode.NEGATIVE)))
        def run(case) -> None:  # noqa: ANN001
            try:
                response = case.call(headers=headers)
            except Exception as exc:  # the in-process client re-raises what would be a 500
                problem = f"500 ({type(exc).__name__}: {exc}) on {case.method} {case.formatted_path} " \
                          f"query={case.query!r} body={str(case.body)[:200]!r}"
            else:
                problem = _check(case, response)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if problem and problem not in failures:
                failures.append(problem)

        run()
    print(service, len(operations), "operations", dict(sorted(statuses.items())))
    # The fuzzer reached past validation: some requests were refused as invalid, some answered.
    assert sum(statuses.values()) >= 3 * len(operations)
    assert any(400 <= code < 500 for code in statuses) and any(code < 300 for code in statuses)
    assert not failures, f"{len(failures)} bad answers from {service}:\n" + "\n".join(failures[:20])
