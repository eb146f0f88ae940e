"""How far a latency table can be trusted: its predictions against whole networks measured on the
same device (held out from the fit), as JSON and a predicted-vs-measured plot (SVG) in the store."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from typing import Any

from autonn.latency_table import LatencyTable
from tango.store import Store

SUMMARY = ("mape", "within_10pct", "kendall_tau", "noise_floor", "n_networks", "table_build_seconds")


def report_keys(table_id: str) -> dict[str, str]:
    return {"json": f"latency/{table_id}.report.json", "svg": f"latency/{table_id}.report.svg"}


def _finite(value: Any) -> Any:
    """NaN and infinities (a τ of one network, a zero median) as null: strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def build_report(*, table: LatencyTable, table_id: str, evaluation: dict[str, Any],
                 eval_seconds: float) -> dict[str, Any]:
    return {k: _finite(v) for k, v in {
        "latency_table_id": table_id, "device": table.device, "runtime": table.runtime, "threads": table.threads,
        "space": table.space, "space_options": table.space_options,
        **{k: evaluation[k] for k in ("mape", "within_10pct", "kendall_tau", "noise_floor", "n_networks")},
        "table_build_seconds": table.build_seconds, "eval_seconds": round(eval_seconds, 2),
        "table_noise_floor": table.noise_floor, "n_networks_fit": table.n_networks_fit,
        "correction": table.correction.get("model"),
        **{k: evaluation[k] for k in ("mape_uncorrected", "kendall_tau_uncorrected", "predicted_ms", "measured_ms",
                                      "measured_noise", "archs")},
        "created_at": datetime.now(UTC).isoformat(),
    }.items()}


def plot_svg(report: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # a Figure of its own: no pyplot state shared across threads

    pred, meas = report["predicted_ms"], report["measured_ms"]
    fig = Figure(figsize=(5.5, 5.0))
    ax = fig.subplots()
    lo, hi = min(pred + meas) * 0.9, max(pred + meas) * 1.1
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="tab:green", alpha=0.12,
                    label="±10 %")
    ax.plot([lo, hi], [lo, hi], color="0.4", linewidth=1, label="predicted = measured")
    ax.scatter(meas, pred, s=18, color="tab:blue", zorder=3, label=f"{len(meas)} held-out networks")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms, median of rounds)",
           ylabel="predicted latency (ms)",
           title=f"{report['device']} · {report['runtime']} · {report['threads']} thread(s)")
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"

    tau = "n/a" if report["kendall_tau"] is None else f"{report['kendall_tau']:.3f}"
    ax.text(0.03, 0.97, f"MAPE {pct(report['mape'])}\nwithin ±10 %: {pct(report['within_10pct'])}\n"
                        f"Kendall τ {tau}\nnoise floor {pct(report['noise_floor'])}",
            transform=ax.transAxes, va="top", fontsize=9, family="monospace",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    ax.legend(loc="lower right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})  # no timestamp: same figures, same bytes
    return buf.getvalue()


def save_report(store: Store, table_id: str, report: dict[str, Any]) -> dict[str, Any]:
    """Write the report and its plot (once); returns the summary figures."""
    import json

    keys = report_keys(table_id)
    store.put_if_absent(keys["json"], json.dumps(report, indent=2, sort_keys=True).encode())
    store.put_if_absent(keys["svg"], plot_svg(report))
    return summary(report)


def summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report.get(k) for k in SUMMARY}
