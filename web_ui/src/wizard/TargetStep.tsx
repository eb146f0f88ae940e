import { useEffect, useState } from "react";
import { api, must, problemText, type Device, type Project } from "../api/client";
import type { LatencyRange } from "../api/types";
import { ErrorBox, errorText } from "../components/common";

export function rangeHint(range: LatencyRange | null | "unknown"): string {
  if (range === null) return "…";
  if (range === "unknown") return "The achievable range is measured on the first run.";
  return `Achievable on ${range.device}: ${range.fastest_ms.toPrecision(3)} ms (fastest network) to ${range.largest_ms.toPrecision(3)} ms (largest).`;
}

export function TargetStep({ project, onSaved }: { project: Project; onSaved: (p: Project) => void }) {
  const [devices, setDevices] = useState<Device[]>([]);
  const [device, setDevice] = useState(project.device);
  const [budget, setBudget] = useState(String(project.budget_ms));
  const [targets, setTargets] = useState<string[]>(project.targets ?? ["onnxruntime"]);
  const [range, setRange] = useState<LatencyRange | null | "unknown">(null);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);

  useEffect(() => {
    must(api.GET("/devices")).then(setDevices).catch((e) => setError(errorText(e)));
  }, []);
  useEffect(() => {
    setRange(null);
    api.GET("/projects/{project_id}/latency-range", { params: { path: { project_id: project.id } } }).then(({ data, error, response }) => {
      if (response.ok) setRange(data as unknown as LatencyRange);
      else if (response.status === 404) setRange("unknown"); // no latency table for the device yet
      else setError(problemText(error, response.status));
    });
  }, [project.id, project.device]);

  const runtimes = devices.find((d) => d.name === device)?.runtimes ?? [];

  async function save(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    setSaved(false);
    try {
      const body = { device, budget_ms: Number(budget), targets };
      onSaved(await must(api.PATCH("/projects/{project_id}", { params: { path: { project_id: project.id } }, body })));
      setSaved(true);
    } catch (err) {
      setError(errorText(err));
    }
  }

  function toggle(t: string) {
    setTargets((all) => (all.includes(t) ? all.filter((x) => x !== t) : [...all, t]));
  }

  return (
    <form onSubmit={save}>
      <h3>4. Target</h3>
      <label>Device profile
        <select name="device" value={device} onChange={(e) => setDevice(e.target.value)}>
          {devices.map((d) => <option key={d.name} value={d.name}>{d.name} — {d.cpu || d.description}</option>)}
        </select>
      </label>
      {runtimes.length > 0 && <p className="help">Runtimes on {device}: {runtimes.join(", ")}</p>}
      <label>Latency budget (ms at batch 1)
        <input name="budget" type="number" step="any" value={budget} onChange={(e) => setBudget(e.target.value)} />
      </label>
      <p className="hint" data-testid="range-hint">{rangeHint(range)}</p>
      <fieldset>
        <legend>Packages to generate</legend>
        {["pytorch", "onnxruntime", "tvm", "tensorrt"].map((t) => (
          <label key={t}><input type="checkbox" checked={targets.includes(t)} onChange={() => toggle(t)} /> {t}</label>
        ))}
      </fieldset>
      <ErrorBox error={error} />
      <button type="submit">Save target</button> {saved && <span className="ok">saved</span>}
    </form>
  );
}
