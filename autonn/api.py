"""autonn's REST API (routes only): search spaces, supernets, latency tables, models, and the Jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import Response

from autonn import __doc__ as DESCRIPTION
from autonn.latency import LatencyTable
from autonn.runtime import build_runtime
from autonn.spaces import SEARCH_SPACES, get_search_space
from tango.settings import Settings
from tango.store import InvalidKey
from tango.web import RuntimeDep, create_service_app

router = APIRouter(tags=["autonn"])
MODEL_FILES = {"model.onnx": "application/octet-stream", "model.ts": "application/octet-stream",
               "card.json": "application/json"}


def _row_or_404(runtime, table: str, row_id: str, what: str) -> dict[str, Any]:  # noqa: ANN001
    row = runtime.records.get(table, row_id)
    if row is None:
        raise HTTPException(404, detail=f"no {what} {row_id!r}")
    return row


@router.get("/spaces")
def list_spaces() -> list[dict[str, Any]]:
    out = []
    for name in sorted(SEARCH_SPACES):
        space = get_search_space(name)
        out.append({"name": name, "task": space.task, "cardinality": space.cardinality(),
                    "options": getattr(space, "options", {}), "largest": space.largest(), "smallest": space.smallest()})
    return out


@router.get("/supernets")
def list_supernets(runtime: RuntimeDep, dataset_id: str | None = None, state: str | None = None) -> list[dict]:
    return runtime.records.list("supernets", dataset_id=dataset_id, state=state)


@router.get("/supernets/{supernet_id}")
def get_supernet(supernet_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    return _row_or_404(runtime, "supernets", supernet_id, "supernet")


@router.get("/latency-tables")
def list_latency_tables(runtime: RuntimeDep, device: str | None = None, space: str | None = None,
                        supernet_id: str | None = None) -> list[dict]:
    """Newest first; with `supernet_id`, only tables for that supernet's space and options."""
    from autonn.records import options_hash

    wanted = None
    if supernet_id is not None:
        row = _row_or_404(runtime, "supernets", supernet_id, "supernet")
        space, wanted = row["space"], options_hash(row["space"], row["space_options"])
    rows = runtime.records.list("latency_tables", device=device, space=space)
    return [r for r in rows if wanted is None or r["options_hash"] == wanted]


@router.get("/latency-tables/{table_id}")
def get_latency_table(table_id: str, runtime: RuntimeDep) -> Response:
    row = _row_or_404(runtime, "latency_tables", table_id, "latency table")
    return Response(runtime.store.get_bytes(row["key"]), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="latency-{table_id}.json"'})


def _report_key(runtime, table_id: str, kind: str) -> str:  # noqa: ANN001
    from autonn.latency_report import report_keys

    _row_or_404(runtime, "latency_tables", table_id, "latency table")
    key = report_keys(table_id)[kind]
    if not runtime.store.exists(key):
        raise HTTPException(404, detail=f"latency table {table_id} has no accuracy report: it was imported or built "
                                        "with n_eval=0; build one with a latency_table job (n_eval >= 2)")
    return key


@router.get("/latency-tables/{table_id}/report")
def get_latency_report(table_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """The table's predictions against held-out measured networks: MAPE, share within ±10 %,
    Kendall τ, the noise floor of the measurements, and every point."""
    return runtime.store.get_json(_report_key(runtime, table_id, "json"))


@router.get("/latency-tables/{table_id}/report.svg", response_class=Response)
def get_latency_report_plot(table_id: str, runtime: RuntimeDep) -> Response:
    return Response(runtime.store.get_bytes(_report_key(runtime, table_id, "svg")), media_type="image/svg+xml")


@router.post("/latency-tables", status_code=201)
async def import_latency_table(request: Request, runtime: RuntimeDep, supernet_id: str | None = None) -> dict[str, Any]:
    """Import a table measured elsewhere (an agent on the device, a GPU machine). With
    `supernet_id`, the table must be for that supernet's search space and options."""
    from autonn.jobs.latency_table import register_table

    body = await request.body()
    try:
        table = LatencyTable.from_json(body.decode())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise HTTPException(422, detail=f"this is not a Tango latency table: {exc}") from exc
    try:
        if supernet_id is not None:
            row = _row_or_404(runtime, "supernets", supernet_id, "supernet")
            space = get_search_space(row["space"], **row["space_options"])
        else:
            space = get_search_space(table.space, **table.space_options)
        table.check_compatible(space)
    except (KeyError, ValueError, TypeError) as exc:
        raise HTTPException(422, detail=str(exc).strip('"')) from exc
    missing = [b.key for b in space.all_blocks() if b.key not in table.entries]
    if missing:
        raise HTTPException(422, detail=f"this latency table lacks {len(missing)} block(s) of search space "
                                        f"{space.name} (e.g. {missing[0]!r}); it was measured for another "
                                        "search space or options: rebuild it for this one")
    return register_table(runtime, table=table, table_id=None)


@router.get("/models")
def list_models(runtime: RuntimeDep, supernet_id: str | None = None) -> list[dict]:
    return runtime.records.list("models", supernet_id=supernet_id)


@router.get("/models/{model_id}")
def get_model(model_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    return _row_or_404(runtime, "models", model_id, "model")


@router.get("/models/{model_id}/files/{name}")
def get_model_file(model_id: str, name: str, runtime: RuntimeDep) -> Response:
    row = _row_or_404(runtime, "models", model_id, "model")
    if name not in MODEL_FILES:
        raise HTTPException(404, detail=f"a model has the files {', '.join(MODEL_FILES)}; not {name!r}")
    try:
        data = runtime.store.get_bytes(row["files"][name])
    except InvalidKey as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    return Response(data, media_type=MODEL_FILES[name],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(build_runtime(settings), routers=[router], description=DESCRIPTION or "")


app = create_app()
