import { useState } from "react";
import { authHeaders } from "../api/client";
import { labelling } from "../api/labelling";
import type { ImportJob } from "../api/types";
import { ErrorBox, ProgressBar, errorText } from "../components/common";

export function ImportResult({ job }: { job: ImportJob }) {
  const r = job.result;
  return (
    <div className="import">
      <p>Import {job.state}{job.message ? `: ${job.message}` : ""}</p>
      {job.state !== "succeeded" && job.state !== "failed" && <ProgressBar value={job.progress} label="import" />}
      {job.error && <p className="error">{job.error}</p>}
      {r && (
        <>
          <p>{r.imported ?? 0} of {r.files ?? 0} files imported, {r.labelled ?? 0} already labelled
            {r.new_classes?.length ? `; new classes: ${r.new_classes.join(", ")}` : ""}.</p>
          {r.rejected && r.rejected.length > 0 && (
            <table className="rejected">
              <caption>{r.rejected.length} files were not imported</caption>
              <thead><tr><th>file</th><th>why</th></tr></thead>
              <tbody>{r.rejected.map((f, i) => <tr key={i}><td>{f.file}</td><td>{f.message}</td></tr>)}</tbody>
            </table>
          )}
        </>
      )}
    </div>
  );
}

export function DataStep({ projectId, jobs, onJob }: { projectId: string; jobs: ImportJob[]; onJob: (j: ImportJob) => void }) {
  const [over, setOver] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function upload(file: File) {
    setError(null);
    setBusy(true);
    try {
      // The zip streams through as it is; the typed client would re-encode the body.
      const response = await fetch(`/projects/${encodeURIComponent(projectId)}/labelling/imports`, {
        method: "POST", body: file, headers: { ...authHeaders(), "Content-Type": "application/zip" },
      });
      const body = await response.json();
      if (!response.ok) throw new Error(body.detail ?? `the upload failed (${response.status})`);
      let job = body as ImportJob;
      onJob(job);
      while (job.state === "queued" || job.state === "running") {
        await new Promise((r) => setTimeout(r, 700));
        job = await labelling.importJob(projectId, job.id);
        onJob(job);
      }
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  function drop(e: React.DragEvent) {
    e.preventDefault();
    setOver(false);
    const file = e.dataTransfer.files[0];
    if (file) void upload(file);
  }

  return (
    <section>
      <h3>2. Data</h3>
      <div className={`dropzone${over ? " over" : ""}`} onDragOver={(e) => { e.preventDefault(); setOver(true); }}
           onDragLeave={() => setOver(false)} onDrop={drop}>
        <p>Drop a <b>.zip</b> of images here: class folders, YOLO, COCO or VOC labels are read too.</p>
        <label className="button">Choose a zip…
          <input type="file" accept=".zip,application/zip" hidden disabled={busy}
                 onChange={(e) => e.target.files?.[0] && upload(e.target.files[0])} />
        </label>
      </div>
      <ErrorBox error={error} />
      {jobs.length === 0 ? <p className="empty">No data uploaded yet.</p> : jobs.map((j) => <ImportResult key={j.id} job={j} />)}
    </section>
  );
}
