"""Static checks of docker-compose.yml and the service Dockerfiles.

No Docker engine is needed: the compose file is parsed with PyYAML and checked
against the service contract (ports, queues, entry points, settings, secrets).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"

# The contract: service -> (API port, Celery queue, pyproject extra).
CONTRACT = {
    "project_manager": (8080, "pipeline", "project_manager"),
    "labelling": (8081, "labelling", "labelling"),
    "autonn": (8082, "autonn", "autonn"),
    "deploy_codegen": (8083, "codegen", "codegen"),
}
INFRA = ("postgres", "redis")
SECRETS = ("POSTGRES_PASSWORD", "TANGO_SERVICE_TOKEN")
# `${VAR:?message}`: compose refuses to start when VAR is unset or empty.
REQUIRED_VAR = r"\$\{%s:\?[^}]+\}"

COMPOSE_TEXT = COMPOSE_FILE.read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def api(name: str) -> dict:
    return SERVICES[name]


def worker(name: str) -> dict:
    return SERVICES[f"{name}_worker"]


def argv(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def option(args: list[str], flag: str) -> str:
    """Value of `--flag value` (or `--flag=value`) in an argv list."""
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...] form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def depends_on(service: dict) -> dict:
    deps = service.get("depends_on") or {}
    # The short list form means "service_started", which the contract forbids.
    assert isinstance(deps, dict), f"depends_on must use the long form with conditions: {deps}"
    return deps


def entry_points() -> list[tuple[str, str]]:
    """(service, "module:attr") for every uvicorn / celery -A command."""
    found = []
    for name, service in SERVICES.items():
        if "command" not in service:
            continue
        args = argv(service)
        if args[0] == "uvicorn":
            found.append((name, args[1]))
        elif args[0] == "celery":
            found.append((name, option(args, "-A")))
    return found


def settings_fields() -> dict:
    from tango.settings import Settings

    return Settings.model_fields


def default_url(name: str) -> str:
    # Read the declared default (not Settings()) so TANGO_* variables in the
    # test environment cannot change the outcome.
    field = settings_fields()[f"{name}_url"]
    return str(field.get_default(call_default_factory=True))


def dockerfile(name: str) -> Path:
    build = api(name)["build"]
    return ROOT / build.get("context", ".") / build["dockerfile"]


def from_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if re.match(r"\s*FROM\s", line, re.I)]


# ---------------------------------------------------------------------------
# compose file structure
# ---------------------------------------------------------------------------
def test_compose_parses():
    assert isinstance(COMPOSE, dict)
    assert isinstance(SERVICES, dict) and SERVICES


def test_infrastructure_healthchecks():
    assert "redis-cli ping" in " ".join(SERVICES["redis"]["healthcheck"]["test"])
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])


def test_no_unexpected_services():
    expected = set(INFRA) | set(CONTRACT) | {f"{name}_worker" for name in CONTRACT}
    assert set(SERVICES) == expected


@pytest.mark.parametrize("name", CONTRACT)
def test_service_has_api_and_worker_from_same_build(name):
    assert name in SERVICES and f"{name}_worker" in SERVICES
    assert argv(api(name))[0] == "uvicorn"
    assert argv(worker(name))[0] == "celery"
    assert api(name)["build"] == worker(name)["build"]
    assert api(name)["build"].get("context", ".") == "."
    assert api(name).get("image") == worker(name).get("image")


@pytest.mark.parametrize("name", SERVICES)
def test_depends_on_healthy_existing_services(name):
    for dep, spec in depends_on(SERVICES[name]).items():
        assert dep in SERVICES, f"{name} depends on unknown service {dep}"
        condition = spec.get("condition")
        if "healthcheck" in SERVICES[dep]:
            assert condition == "service_healthy", f"{name} -> {dep}: {condition}"
        else:
            assert condition in ("service_healthy", "service_started"), f"{name} -> {dep}"


@pytest.mark.parametrize("name", CONTRACT)
def test_api_waits_for_infrastructure_and_worker_for_api(name):
    assert set(INFRA) <= set(depends_on(api(name)))
    assert depends_on(worker(name))[name]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", CONTRACT)
def test_api_healthcheck_probes_readyz(name):
    port = CONTRACT[name][0]
    test = api(name)["healthcheck"]["test"]
    probe = " ".join(test) if isinstance(test, list) else test
    assert f":{port}/readyz" in probe
    assert "urllib" in probe  # images have no curl


@pytest.mark.parametrize("name", CONTRACT)
def test_store_volume_shared(name):
    for service in (api(name), worker(name)):
        assert environment(service)["TANGO_STORE"] == "file:///data/store"
        mounts = service.get("volumes", [])
        assert "store:/data/store" in mounts, mounts
    assert "store" in COMPOSE["volumes"]


def test_postgres_has_data_volume():
    mounts = SERVICES["postgres"]["volumes"]
    assert any(m.split(":")[0] in COMPOSE["volumes"] for m in mounts)


# ---------------------------------------------------------------------------
# entry points, ports and queues against the Python code
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("service", "target"), entry_points(), ids=lambda v: str(v))
def test_command_entry_point_exists(service, target):
    module_name, _, attr = target.partition(":")
    assert attr, f"{service}: {target!r} should be module:attribute"
    assert importlib.util.find_spec(module_name) is not None, f"{service}: no module {module_name}"
    module = importlib.import_module(module_name)
    assert hasattr(module, attr), f"{service}: {module_name} has no attribute {attr}"


@pytest.mark.parametrize("name", CONTRACT)
def test_api_port(name):
    from tango.spec import SERVICES as SPEC

    port = CONTRACT[name][0]
    args = argv(api(name))
    assert args[1] == f"{name}.api:app"
    assert int(option(args, "--port")) == port
    assert option(args, "--host") == "0.0.0.0"
    assert SPEC[name].port == port
    assert urlsplit(default_url(name)).port == port
    # the in-compose URL reaches the API container on the same port
    url = urlsplit(environment(api(name))[f"TANGO_{name.upper()}_URL"])
    assert (url.hostname, url.port) == (name, port)
    for mapping in api(name).get("ports", []):
        assert str(mapping).rsplit(":", 1)[-1] == str(port)


@pytest.mark.parametrize("name", CONTRACT)
def test_worker_queue(name):
    from tango.spec import SERVICES as SPEC

    queue = CONTRACT[name][1]
    args = argv(worker(name))
    assert option(args, "-A") == f"{name}.tasks:celery_app"
    assert "worker" in args
    assert option(args, "-Q") == queue
    assert SPEC[name].queue == queue
    assert option(args, "--pool") == "threads"


# ---------------------------------------------------------------------------
# environment and secrets
# ---------------------------------------------------------------------------
def test_tango_variables_are_settings_fields():
    names = set(re.findall(r"\bTANGO_[A-Z0-9_]+\b", COMPOSE_TEXT))
    for service in SERVICES.values():
        names |= {k for k in environment(service) if k.startswith("TANGO_")}
    assert names
    fields = settings_fields()
    unknown = sorted(n for n in names if n.removeprefix("TANGO_").lower() not in fields)
    assert not unknown, f"not fields of tango.settings.Settings: {unknown}"


@pytest.mark.parametrize("name", CONTRACT)
def test_services_share_environment(name):
    env = environment(api(name))
    assert env == environment(worker(name))
    expected = {"TANGO_DATABASE_URL", "TANGO_REDIS_URL", "TANGO_STORE", "TANGO_SERVICE_TOKEN"}
    expected |= {f"TANGO_{other.upper()}_URL" for other in CONTRACT}
    assert expected <= set(env)


def test_secrets_come_from_environment():
    assert re.fullmatch(REQUIRED_VAR % "POSTGRES_PASSWORD",
                        environment(SERVICES["postgres"])["POSTGRES_PASSWORD"])
    for name in CONTRACT:
        env = environment(api(name))
        assert re.fullmatch(REQUIRED_VAR % "TANGO_SERVICE_TOKEN", env["TANGO_SERVICE_TOKEN"])
        # (urlsplit cannot be used: the "?" of ":?" would end the netloc)
        url = env["TANGO_DATABASE_URL"]
        userinfo = re.match(r"[\w+]+://([^@]*)@postgres:5432/", url)
        assert userinfo, url
        user, _, password = userinfo.group(1).partition(":")
        assert re.fullmatch(REQUIRED_VAR % "POSTGRES_PASSWORD", password), url


def test_no_default_or_literal_secrets():
    for secret in SECRETS:
        # every interpolation of a secret must be the required form, never ${X:-default}
        for use in re.findall(r"\$\{%s[^}]*\}|\$%s\b" % (secret, secret), COMPOSE_TEXT):
            assert re.fullmatch(REQUIRED_VAR % secret, use), use
    for name, service in SERVICES.items():
        for key, value in environment(service).items():
            if re.search(r"PASSWORD|TOKEN|SECRET|API_KEY", key):
                assert value.startswith("${") and ":?" in value, f"{name}: {key} is a literal"


# ---------------------------------------------------------------------------
# Dockerfiles
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONTRACT)
def test_dockerfile_multistage_installs_extra(name):
    path = dockerfile(name)
    assert path.is_file(), path
    text = path.read_text()
    froms = from_lines(path)
    assert len(froms) >= 2, f"{path} is not multi-stage"
    assert "python:3.11-slim" in froms[-1]
    assert re.search(r"COPY --from=builder /opt/venv", text)
    assert re.search(r"^USER (?!root\b|0\b)\S+", text, re.M), "runtime must not run as root"
    extra = CONTRACT[name][2]
    assert re.search(r"pip install [^\n]*[\"']?\.\[%s\][\"']?" % re.escape(extra), text), extra


@pytest.mark.parametrize("name", ["autonn", "deploy_codegen"])
def test_torch_variant_build_arg(name):
    text = dockerfile(name).read_text()
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.M)
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in text
    assert "TORCH_VARIANT" in api(name)["build"].get("args", {})


def test_project_manager_builds_web_ui():
    path = dockerfile("project_manager")
    assert any("node:20-slim" in line for line in from_lines(path))
    text = path.read_text()
    assert "[ -f package.json ]" in text
    assert "web_ui/dist" in text


def test_dockerignore_keeps_secrets_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env"} <= set(ignored)
