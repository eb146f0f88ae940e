import { useCallback, useState } from "react";
import type { Project } from "../api/client";
import type { ImportJob, Run } from "../api/types";
import { DataStep } from "./DataStep";
import { LabelStep } from "./LabelStep";
import { ResultsStep } from "./ResultsStep";
import { RunStep } from "./RunStep";
import { TargetStep } from "./TargetStep";
import { TaskStep } from "./TaskStep";

export const STEPS = ["Task", "Data", "Label", "Target", "Run", "Results"] as const;

export function Wizard({ initial }: { initial: Project | null }) {
  const [project, setProject] = useState<Project | null>(initial);
  const [step, setStep] = useState(initial ? 1 : 0);
  const [imports, setImports] = useState<ImportJob[]>([]);
  const [run, setRun] = useState<Run | null>(null);
  const onJob = useCallback((j: ImportJob) => setImports((all) => [j, ...all.filter((x) => x.id !== j.id)]), []);
  const onRun = useCallback((r: Run) => setRun(r), []);

  return (
    <section className="wizard">
      <h2>{project ? project.name : "New project"}</h2>
      <nav className="steps">
        {STEPS.map((name, i) => (
          <button key={name} className={i === step ? "active" : ""} disabled={!project && i > 0} onClick={() => setStep(i)}>
            {i + 1}. {name}
          </button>
        ))}
      </nav>
      <div className="card">
        {step === 0 && <TaskStep project={project} onCreated={(p) => { setProject(p); setStep(1); }} />}
        {project && step === 1 && <DataStep projectId={project.id} jobs={imports} onJob={onJob} />}
        {project && step === 2 && <LabelStep projectId={project.id} />}
        {project && step === 3 && <TargetStep project={project} onSaved={setProject} />}
        {project && step === 4 && <RunStep projectId={project.id} importJobIds={imports.map((j) => j.id)} run={run} onRun={onRun} />}
        {project && step === 5 && <ResultsStep project={project} run={run} />}
      </div>
      {project && step < STEPS.length - 1 && (
        <button className="next" onClick={() => setStep(step + 1)}>Next: {STEPS[step + 1]} →</button>
      )}
    </section>
  );
}
