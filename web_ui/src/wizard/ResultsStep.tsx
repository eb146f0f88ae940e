import { useState } from "react";
import type { Project } from "../api/client";
import type { Run } from "../api/types";
import { Empty, ErrorBox, download, errorText } from "../components/common";

const ms = (v: number | null | undefined) => (v == null ? "—" : `${v.toFixed(3)} ms`);

export interface PackageRow {
  target: string;
  verified: string | null; // run | static | failed (deploy_codegen's words)
  max_abs_diff: number | null;
  median_ms: number | null;
}

type CodegenPackage = { name?: string; target?: string; verified?: string | null;
                        summary?: { max_abs_diff?: number | null; median_ms?: number | null } | null };

/** Parity and speed per package: the report's entry, or the codegen stage's package summary. */
export function packageRows(run: Run): PackageRow[] {
  const codegen = run.stages.find((s) => s.name === "codegen")?.result as { packages?: CodegenPackage[] } | null;
  const byName = Object.fromEntries((codegen?.packages ?? []).map((p) => [p.name ?? p.target, p]));
  return (run.result?.report?.packages ?? []).map((p) => {
    const stage = byName[p.name ?? p.target ?? ""] ?? {};
    const verified = p.report?.verified ?? stage.verified ?? null;
    return {
      target: p.target ?? p.name ?? "",
      verified: verified === true ? "run" : verified === false ? "failed" : verified,
      max_abs_diff: p.report?.max_abs_diff ?? stage.summary?.max_abs_diff ?? null,
      median_ms: p.report?.median_ms ?? stage.summary?.median_ms ?? null,
    };
  });
}

const VERIFIED: Record<string, string> = { run: "yes (ran it)", static: "checked statically", failed: "no" };

export function ResultsStep({ project, run }: { project: Project; run: Run | null }) {
  const [error, setError] = useState<string | null>(null);
  const report = run?.state === "succeeded" ? run.result?.report : undefined;
  if (!run || !report) return <section><h3>6. Results</h3><Empty>Results appear here when a run succeeds.</Empty></section>;
  const { metric, latency } = report;

  async function get(target: string) {
    setError(null);
    try {
      await download(`/projects/${encodeURIComponent(project.id)}/runs/${encodeURIComponent(run!.id)}/packages/${encodeURIComponent(target)}`,
        `${project.name}-${target}.tar.gz`);
    } catch (e) {
      setError(errorText(e));
    }
  }

  return (
    <section>
      <h3>6. Results</h3>
      <table className="results">
        <tbody>
          <tr><th>budget on {project.device}</th><td>{project.budget_ms} ms</td></tr>
          <tr><th>predicted latency</th><td>{ms(latency.predicted_ms)}</td></tr>
          <tr><th>measured latency</th><td>{ms(latency.measured_ms)}</td></tr>
          <tr><th>meets the budget</th><td className={report.meets_budget ? "ok" : "error"}>{report.meets_budget ? "yes" : "no"}</td></tr>
          <tr><th>{metric.name} (validation)</th><td>{metric.val.toFixed(4)}</td></tr>
          {metric.test != null && <tr><th>{metric.name} (test)</th><td>{metric.test.toFixed(4)}</td></tr>}
        </tbody>
      </table>
      <h4>Packages</h4>
      <table className="packages">
        <thead><tr><th>target</th><th>outputs match PyTorch</th><th>max abs diff</th><th>median latency</th><th /></tr></thead>
        <tbody>
          {packageRows(run).map((p) => (
            <tr key={p.target}>
              <td>{p.target}</td>
              <td className={p.verified === "failed" ? "error" : ""}>{p.verified ? VERIFIED[p.verified] ?? p.verified : "—"}</td>
              <td>{p.max_abs_diff == null ? "—" : p.max_abs_diff.toExponential(2)}</td>
              <td>{ms(p.median_ms)}</td>
              <td><button onClick={() => get(p.target)}>Download {p.target}</button></td>
            </tr>
          ))}
        </tbody>
      </table>
      <ErrorBox error={error} />
    </section>
  );
}
