"""`tango`: run the embedded stack, check it, and drive jobs from a terminal."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tango.client import ServiceClient, ServiceError
from tango.embedded import EmbeddedStack, tail
from tango.settings import Settings
from tango.spec import SERVICES, JobPublic

app = typer.Typer(help="Tango: target-aware, no-code neural-network generation.", no_args_is_help=True)
console = Console()


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValueError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    token_file = settings.home / "service-token"
    if settings.service_token is None and token_file.is_file():
        # The embedded stack's own internal token (see tango.embedded).
        settings = settings.model_copy(update={"service_token": token_file.read_text().strip()})
    return settings


def _readiness(settings: Settings) -> dict[str, tuple[bool, str]]:
    states = {}
    for name in SERVICES:
        url = f"{settings.service_url(name)}/readyz"
        try:
            resp = httpx.get(url, timeout=3.0)
            body = resp.json()
            states[name] = (resp.status_code == 200, body.get("status") or body.get("detail", ""))
        except (httpx.HTTPError, ValueError) as exc:
            states[name] = (False, f"not answering ({type(exc).__name__})")
    return states


@app.command()
def up() -> None:
    """Start every service and worker as local processes; Ctrl-C stops them all."""
    settings = _settings()
    stack = EmbeddedStack(settings)
    console.print(f"starting Tango in {settings.home} "
                  f"(database: {'PostgreSQL' if settings.database_url else 'SQLite'}, "
                  f"broker: {'Redis' if settings.redis_url else 'filesystem'})")
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]could not start:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"Tango is up at [bold]{settings.project_manager_url}[/bold] "
                  f"(API docs: {settings.project_manager_url}/docs; logs: {stack.log_dir})")
    console.print("press Ctrl-C to stop")
    code = 0
    restarts: dict[str, list[float]] = {}
    while not stopping:
        for proc in stack.dead():
            recent = [t for t in restarts.get(proc.name, []) if time.monotonic() - t < 60] + [time.monotonic()]
            restarts[proc.name] = recent
            if len(recent) > 5:
                console.print(f"[red]{proc.name} keeps exiting ({proc.popen.returncode}); giving up[/red]; "
                              f"last lines of {proc.log_path}:\n{tail(proc.log_path)}")
                code, stopping = 1, True
                break
            console.print(f"[yellow]{proc.name} exited ({proc.popen.returncode}); restarting it[/yellow]")
            stack.restart(proc)
        time.sleep(0.5)
    console.print("stopping…")
    stack.stop()
    console.print("stopped")
    raise typer.Exit(code)


@app.command()
def status() -> None:
    """Show each service's readiness."""
    settings = _settings()
    table = Table("service", "url", "ready", "detail")
    states = _readiness(settings)
    for name, (ok, detail) in states.items():
        table.add_row(name, settings.service_url(name), "[green]yes[/green]" if ok else "[red]no[/red]", detail)
    console.print(table)
    raise typer.Exit(0 if all(ok for ok, _ in states.values()) else 1)


def follow(client: ServiceClient, job: JobPublic, *, timeout: float) -> JobPublic:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[message]}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(job.kind, total=1.0, message=job.message)

        def update(j: JobPublic) -> None:
            bar.update(task, completed=j.progress, message=j.message)

        try:
            return client.wait_job(job.id, timeout=timeout, on_update=update)
        except KeyboardInterrupt:
            console.print(f"cancelling job {job.id}…")
            client.cancel_job(job.id)
            return client.wait_job(job.id, timeout=60)


def _system_check(settings: Settings, steps: int) -> JobPublic:
    from tango.credentials import user_token

    with ServiceClient(settings.project_manager_url, token=user_token(settings)) as client:
        job = client.create_job("system_check", {"steps": steps})
        console.print(f"system_check job {job.id} on project_manager")
        return follow(client, job, timeout=600)


def _report(job: JobPublic) -> None:
    if job.state.value != "succeeded":
        console.print(f"[red]system check {job.state.value}:[/red] {job.error or job.message}")
        raise typer.Exit(1)
    table = Table("service", "job", "state", "seconds", "digest")
    for name, child in job.result["services"].items():
        table.add_row(name, child["job_id"], child["state"], str(child["seconds"]), child["digest"][:16] + "…")
    console.print(table)


@app.command()
def selftest(steps: Annotated[int, typer.Option(help="selftest steps per service")] = 10) -> None:
    """Run a system check through every service of a running stack."""
    try:
        _report(_system_check(_settings(), steps))
    except ServiceError as exc:
        console.print(f"[red]{exc}[/red]\nis the stack up? start it with `tango up`")
        raise typer.Exit(1) from exc


@app.command("login")
def login_(username: Annotated[str, typer.Option(prompt=True)],
           password: Annotated[str, typer.Option(prompt=True, hide_input=True)]) -> None:
    """Sign in to project_manager and keep the token in TANGO_HOME/credentials.json."""
    from tango.credentials import login

    settings = _settings()
    try:
        login(settings, username=username, password=password)
    except ServiceError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"signed in as {username}")


@app.command()
def demo(steps: Annotated[int, typer.Option(help="selftest steps per service")] = 10) -> None:
    """Start the embedded stack (unless one is running), run the main job end to end, stop."""
    settings = _settings()
    stack = None
    if not all(ok for ok, _ in _readiness(settings).values()):
        stack = EmbeddedStack(settings)
        console.print(f"starting the embedded stack in {settings.home} …")
        stack.start()
    try:
        job = _system_check(settings, steps)
        _report(job)
        console.print(f"results: job {job.id} at {settings.project_manager_url}/jobs/{job.id}; "
                      f"artifacts under {settings.store_url}/runs/")
    finally:
        if stack is not None:
            stack.stop()


@app.command()
def job(service: Annotated[str, typer.Argument(help=f"one of: {', '.join(SERVICES)}")],
        kind: str, params: Annotated[str, typer.Option(help="JSON object of job params")] = "{}",
        wait: bool = True) -> None:
    """Create a job of KIND on SERVICE and follow it."""
    settings = _settings()
    if service not in SERVICES:
        console.print(f"[red]unknown service {service!r}[/red]; choose one of {', '.join(SERVICES)}")
        raise typer.Exit(2)
    token = settings.service_token
    if service == "project_manager":
        from tango.credentials import user_token

        token = user_token(settings)
    with ServiceClient(settings.service_url(service), token=token) as client:
        try:
            created = client.create_job(kind, json.loads(params))
            final = follow(client, created, timeout=24 * 3600) if wait else created
        except (ServiceError, json.JSONDecodeError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
    sys.stdout.write(final.model_dump_json(indent=2) + "\n")
    raise typer.Exit(0 if final.state.value in ("succeeded", "queued") else 1)


from tango.cli_nas import nas  # noqa: E402  (registered after the helpers it uses are defined)

app.add_typer(nas, name="nas")
from tango.agent import agent as _agent_cmd  # noqa: E402

app.command("agent")(_agent_cmd)


@app.command("run")
def run_(project_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a project YAML")],
         report_json: Annotated[Path | None, typer.Option(help="also write the finished run (stages, report) "
                                                                "as JSON to this file")] = None) -> None:
    """Run a whole project end to end (starting the embedded stack if none is up) and print its report."""
    from tango.cli_run import run_project

    run_project(project_file, report_json=report_json)
