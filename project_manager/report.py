"""A run's report: one JSON for programs and one self-contained HTML page (inline SVG plots) for people."""

from __future__ import annotations

import html
import io
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from project_manager.pipeline import Run


def _svg(fig) -> str:  # noqa: ANN001
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _plots(data: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    front, chosen, budget = data["search"]["front"], data["search"]["chosen"], data["project"]["budget_ms"]
    if front:
        # The search job draws its front from metrics measured on the supernet where it can
        # (front_candidates); the chosen sub-network then goes on the same scale.
        key = "supernet_metric" if all(p.get("supernet_metric") is not None for p in front) else "predicted_metric"
        chosen_y = chosen.get(key) if chosen.get(key) is not None else chosen["predicted_metric"]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.plot([p["predicted_ms"] for p in front], [p[key] for p in front], "o-", label="Pareto front")
        ax.axvline(budget, color="red", linestyle="--", label=f"budget {budget:g} ms")
        ax.plot([chosen["predicted_ms"]], [chosen_y], "*", markersize=14, label="chosen")
        if chosen.get("measured_ms"):
            ax.plot([chosen["measured_ms"]], [chosen_y], "x", markersize=10, label="chosen, measured")
        ax.set_xlabel(f"latency on {data['project']['device']} (ms)")
        ax.set_ylabel(data["model"]["metric"]["name"] + (" on the supernet (validation)" if key == "supernet_metric"
                                                         else " (predicted)"))
        ax.legend(fontsize=8)
        plots["front"] = _svg(fig)
    history = data["supernet"].get("history") or []
    if history:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
        for key in ("val_largest", "val_smallest"):
            ax.plot(epochs, [h.get(key) for h in history], marker="o", label=key.replace("_", " "))
        ft = data["model"].get("history") or []
        if ft:
            ax.plot([epochs[-1] + h.get("epoch", i + 1) for i, h in enumerate(ft)], [h.get("val") for h in ft],
                    marker="s", label="fine-tune (chosen)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(data["model"]["metric"]["name"])
        ax.legend(fontsize=8)
        plots["training"] = _svg(fig)
    lat = data["model"]["latency"]
    if lat.get("predicted_ms") and lat.get("measured_ms"):
        fig, ax = plt.subplots(figsize=(4.5, 2.6))
        ax.barh(["predicted", "measured"], [lat["predicted_ms"], lat["measured_ms"]], color=["#88a", "#4a4"])
        ax.axvline(budget, color="red", linestyle="--")
        ax.set_xlabel("ms (red: budget)")
        plots["latency"] = _svg(fig)
    return plots


def _html(data: dict[str, Any], plots: dict[str, str]) -> str:
    e = html.escape
    p, model, lat = data["project"], data["model"], data["model"]["latency"]
    rows = "".join(
        f"<tr><td>{e(pk.get('name', ''))}</td><td>{e(str(pk.get('target', '')))}</td>"
        f"<td>{e(str((pk.get('summary') or {}).get('verified', pk.get('verified', ''))))}</td>"
        f"<td>{e(str((pk.get('summary') or {}).get('max_abs_diff', '')))}</td>"
        f"<td>{e(str((pk.get('summary') or {}).get('median_ms', '')))}</td></tr>" for pk in data["packages"])
    measured = f"{lat['measured_ms']:.3f} ms" if lat.get("measured_ms") else "not measured"
    predicted = f"{lat['predicted_ms']:.3f} ms" if lat.get("predicted_ms") else "—"
    sections = "".join(f"<figure>{svg}</figure>" for svg in plots.values())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Tango report: {e(p['name'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem}}figure{{display:inline-block}}</style>
</head><body><h1>{e(p['name'])}</h1>
<p>{e(p['task'])} · {len(p['classes'])} classes · device <b>{e(p['device'])}</b> · budget <b>{p['budget_ms']:g} ms</b></p>
<h2>Chosen model</h2><ul>
<li>{e(model['metric']['name'])}: <b>{model['metric']['val']:.4f}</b> (validation){'' if model['metric'].get('test') is None else f", {model['metric']['test']:.4f} (test)"}</li>
<li>latency: predicted {predicted}, measured <b>{measured}</b> (noise floor {lat.get('noise_floor') or 0:.1%}) vs budget {p['budget_ms']:g} ms</li>
<li>{model['params']:,} parameters, {model['flops'] / 1e6:.1f} MFLOPs, input {e(str(model['input']['shape']))}</li>
<li>arch: <code>{e(json.dumps(model['arch']))}</code></li></ul>
{sections}
<h2>Packages</h2><table><tr><th>package</th><th>target</th><th>verified</th><th>max abs diff</th><th>median ms</th></tr>{rows}</table>
</body></html>"""


def build_report(run: Run) -> dict[str, Any]:
    r = run.results
    autonn = run.clients["autonn"]
    supernet = autonn.request("GET", f"/supernets/{r['supernet']['supernet_id']}")
    card = autonn.request("GET", f"/models/{r['finetune']['model_id']}")["card"]
    chosen = {k: r["search"].get(k) for k in ("arch", "predicted_metric", "supernet_metric", "finetuned_metric",
                                              "refine_epochs", "predicted_ms", "measured_ms", "rounds", "shortlist")}
    data = {
        "run_id": run.run_id,
        "project": run.project.model_dump(mode="json", include={"id", "name", "task", "classes", "device", "budget_ms",
                                                                "accuracy_floor", "size_ceiling_mb", "targets"}),
        "dataset": {"id": r["version"]["dataset_id"], "version": r["version"]["version"]},
        "supernet": {"id": supernet["id"], "space": supernet["space"], **(supernet["metrics"] or {})},
        "search": {"chosen": chosen, "front": r["search"]["front"], "budget_ms": run.project.budget_ms},
        "model": card,
        "packages": r["codegen"]["packages"],
        "meets_budget": bool(card["latency"].get("measured_ms") is not None
                             and card["latency"]["measured_ms"] <= run.project.budget_ms),
    }
    plots = _plots(data)
    base = f"reports/{run.run_id}"
    run.ctx.store.put_if_absent(f"{base}/report.json", json.dumps(data, indent=2, default=str).encode())
    run.ctx.store.put_if_absent(f"{base}/report.html", _html(data, plots).encode())
    return {"json_key": f"{base}/report.json", "html_key": f"{base}/report.html",
            "metric": card["metric"], "latency": card["latency"], "arch": card["arch"],
            "meets_budget": data["meets_budget"], "packages": [
                {"name": pk.get("name"), "target": pk.get("target"), "summary": pk.get("summary")}
                for pk in data["packages"]]}
