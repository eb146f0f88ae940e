"""`tango nas …`: autonn's jobs from a terminal, over its REST API, with a progress bar."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tango.client import ServiceClient, ServiceError

nas = typer.Typer(help="Supernet NAS on the autonn service: train, measure latency, search, fine-tune.",
                  no_args_is_help=True)


def _run(kind: str, params: dict[str, Any], wait: bool) -> None:
    from tango.cli import _settings, console, follow

    settings = _settings()
    with ServiceClient(settings.autonn_url, token=settings.service_token) as client:
        try:
            job = client.create_job(kind, {k: v for k, v in params.items() if v is not None})
            console.print(f"{kind} job {job.id}")
            final = follow(client, job, timeout=7 * 24 * 3600) if wait else job
        except ServiceError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
    typer.echo(json.dumps(final.result if final.result is not None else final.model_dump(mode="json"), indent=2))
    if final.state.value in ("failed", "cancelled"):
        console.print(f"[red]{kind} {final.state.value}:[/red] {final.error or final.message}")
        raise typer.Exit(1)


def _options(text: str | None) -> dict[str, Any]:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}") from exc


Wait = Annotated[bool, typer.Option(help="follow the job to its end")]


@nas.command()
def train(dataset: Annotated[str, typer.Option(help="dataset id")],
          version: Annotated[str, typer.Option(help="frozen dataset version")],
          space: str | None = None, space_options: Annotated[str | None, typer.Option(help="JSON")] = None,
          epochs: int = 10, batch_size: int = 64, lr: float | None = None, device: str = "auto", wait: Wait = True) -> None:
    """Train a supernet (sandwich rule, in-place distillation) and its accuracy predictor."""
    _run("train_supernet", {"dataset_id": dataset, "dataset_version": version, "space": space,
                            "space_options": _options(space_options), "epochs": epochs, "batch_size": batch_size,
                            "lr": lr, "device": device}, wait)


@nas.command()
def latency(supernet: Annotated[str, typer.Option(help="supernet id (gives space and classes)")],
            threads: int = 1, networks: int = 30, wait: Wait = True) -> None:
    """Measure the host's per-block latency table for a supernet's search space."""
    _run("latency_table", {"supernet_id": supernet, "threads": threads, "n_fit_networks": networks}, wait)


@nas.command()
def search(supernet: Annotated[str, typer.Option(help="supernet id")],
           budget: Annotated[float | None, typer.Option(help="latency budget in ms at batch 1")] = None,
           front: Annotated[bool, typer.Option(help="a Pareto front instead of one budget")] = False,
           points: int = 10, device: str = "host",
           rerank: Annotated[int, typer.Option(help="sub-networks per input size checked on the supernet's "
                                                    "validation split; 0 trusts the accuracy predictor")] = 2,
           refine: Annotated[int | None, typer.Option(help="epochs to fine-tune the best checked sub-network of each "
                                                           "input size before choosing; default by task (detection 5, "
                                                           "classification 0)")] = None,
           candidates: Annotated[int | None, typer.Option(help="with --front: sub-networks nearest the predicted "
                                                               "front checked on the supernet's validation split, "
                                                               "the front drawn from them; 0 trusts the accuracy "
                                                               "predictor; default 3 x points")] = None,
           spread: Annotated[str, typer.Option(help="with --front: which points come back, both ends always: "
                                                    "'hypervolume' (more where accuracy climbs fast) or 'latency' "
                                                    "(evenly spaced)")] = "hypervolume",
           wait: Wait = True) -> None:
    """Find the most accurate sub-network under a latency budget (or the accuracy/latency front)."""
    _run("search", {"supernet_id": supernet, "mode": "front" if front else "budget", "budget_ms": budget,
                    "n_points": points, "device": device, "rerank_per_size": rerank, "refine_epochs": refine,
                    "front_candidates": candidates, "front_spread": spread}, wait)


@nas.command()
def finetune(supernet: Annotated[str, typer.Option(help="supernet id")],
             search_job: Annotated[str | None, typer.Option(help="a finished budget search job")] = None,
             arch: Annotated[str | None, typer.Option(help="or an arch config as JSON")] = None,
             epochs: int = 5, device: str = "auto", wait: Wait = True) -> None:
    """Fine-tune a searched sub-network and export ONNX, TorchScript and its model card."""
    _run("finetune", {"supernet_id": supernet, "search_job_id": search_job,
                      "arch": _options(arch) if arch else None, "epochs": epochs, "device": device}, wait)


@nas.command("list")
def list_(what: Annotated[str, typer.Argument(help="spaces | supernets | latency-tables | models")]) -> None:
    """List autonn's search spaces, supernets, latency tables or models."""
    from tango.cli import _settings

    if what not in ("spaces", "supernets", "latency-tables", "models"):
        raise typer.BadParameter("choose spaces, supernets, latency-tables or models")
    settings = _settings()
    with ServiceClient(settings.autonn_url, token=settings.service_token) as client:
        typer.echo(json.dumps(client.request("GET", f"/{what}"), indent=2, default=str))
