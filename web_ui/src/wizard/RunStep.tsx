import { useEffect, useState } from "react";
import { api, authHeaders, must } from "../api/client";
import type { Run, Stage } from "../api/types";
import { Empty, ErrorBox, ProgressBar, errorText, fetchAuthed } from "../components/common";
import { readEvents } from "../sse";

const TERMINAL = ["succeeded", "failed", "cancelled"];

/** A stage's own share of the run: the run's progress is (stage position + its fraction) / stages. */
export function stageFraction(stage: Stage, run: Pick<Run, "progress">, count: number): number {
  if (stage.state === "succeeded" || stage.state === "skipped") return 1;
  if (stage.state !== "running") return 0;
  return Math.min(Math.max(run.progress * count - stage.position, 0), 1);
}

export function StageList({ run }: { run: Run }) {
  if (run.stages.length === 0) return <Empty>Waiting for a worker to lay out the stages…</Empty>;
  return (
    <table className="stages">
      <tbody>
        {run.stages.map((s) => (
          <tr key={s.name} className={`stage ${s.state}`}>
            <td>{s.name.replace("_", " ")}</td>
            <td><ProgressBar value={stageFraction(s, run, run.stages.length)} label={s.name} /></td>
            <td className="state">{s.state}</td>
            <td className="log">{(s.result as { error?: string } | null)?.error ?? s.log.trim().split("\n").pop()}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function RunStep({ projectId, importJobIds, run, onRun }: {
  projectId: string; importJobIds: string[]; run: Run | null; onRun: (r: Run) => void;
}) {
  const [error, setError] = useState<string | null>(null);
  const [report, setReport] = useState<string | null>(null);
  const path = (run_id: string) => ({ params: { path: { project_id: projectId, run_id } } });

  useEffect(() => {
    if (run) return;
    must(api.GET("/projects/{project_id}/runs", { params: { path: { project_id: projectId } } }))
      .then((runs) => {
        const list = runs as unknown as Run[];
        if (list.length) onRun(list[list.length - 1]);
      }).catch((e) => setError(errorText(e)));
  }, [projectId, run, onRun]);

  // Follow the run live: SSE read through fetch, falling back to polling if the stream breaks.
  const runId = run?.id;
  const live = run && !TERMINAL.includes(run.state);
  useEffect(() => {
    if (!runId || !live) return;
    const abort = new AbortController();
    let poll: ReturnType<typeof setInterval> | undefined;
    readEvents(`/projects/${encodeURIComponent(projectId)}/runs/${encodeURIComponent(runId)}/events`, authHeaders(),
      (e) => { if (e.event === "run") onRun(JSON.parse(e.data) as Run); }, abort.signal)
      .catch(() => {
        if (abort.signal.aborted) return;
        poll = setInterval(() => {
          must(api.GET("/projects/{project_id}/runs/{run_id}", path(runId))).then((r) => onRun(r as unknown as Run)).catch(() => {});
        }, 2000);
      });
    return () => { abort.abort(); if (poll) clearInterval(poll); };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [projectId, runId, live]);

  useEffect(() => {
    setReport(null);
    if (!runId || run?.state !== "succeeded") return;
    fetchAuthed(`/projects/${encodeURIComponent(projectId)}/runs/${encodeURIComponent(runId)}/report?format=html`)
      .then((r) => r.text()).then(setReport).catch((e) => setError(errorText(e)));
  }, [projectId, runId, run?.state]);

  async function act(what: () => Promise<unknown>) {
    setError(null);
    try {
      onRun((await what()) as Run);
    } catch (e) {
      setError(errorText(e));
    }
  }

  const start = () => act(() => must(api.POST("/projects/{project_id}/runs", { params: { path: { project_id: projectId } }, body: { import_job_ids: importJobIds } })));

  return (
    <section>
      <h3>5. Run</h3>
      <ErrorBox error={error} />
      {!run ? (
        <>
          <Empty>No run yet. A run imports, trains the supernet, measures latency, searches under the budget, fine-tunes and packages.</Empty>
          <button onClick={start}>Start run</button>
        </>
      ) : (
        <>
          <p>Run <code data-testid="run-id">{run.id}</code>: <b data-testid="run-state">{run.state}</b> — {run.message}</p>
          <ProgressBar value={run.progress} label="run" />
          <StageList run={run} />
          {run.error && <p className="error">{run.error}</p>}
          <div className="actions">
            {!TERMINAL.includes(run.state) && <button onClick={() => act(() => must(api.POST("/projects/{project_id}/runs/{run_id}/cancel", path(run.id))))}>Cancel</button>}
            {(run.state === "failed" || run.state === "cancelled") && <button onClick={() => act(() => must(api.POST("/projects/{project_id}/runs/{run_id}/retry", path(run.id))))}>Retry</button>}
            {run.state === "succeeded" && <button onClick={start}>Run again</button>}
          </div>
          {report && (
            <>
              <h4>Report: training curves and the Pareto front</h4>
              <iframe title="run report" className="report" srcDoc={report} />
            </>
          )}
        </>
      )}
    </section>
  );
}
