import { useState } from "react";
import { api, must, type Project, type ProjectCreate } from "../api/client";
import { ErrorBox, errorText } from "../components/common";

/** "a, b\nc" → ["a", "b", "c"]: one class per line or comma. */
export function parseClasses(text: string): string[] {
  return text.split(/[\n,]/).map((c) => c.trim()).filter(Boolean);
}

export function TaskStep({ project, onCreated }: { project: Project | null; onCreated: (p: Project) => void }) {
  const [name, setName] = useState(project?.name ?? "");
  const [task, setTask] = useState<"classify" | "detect">(project?.task ?? "classify");
  const [classes, setClasses] = useState(project?.classes.join(", ") ?? "");
  const [training, setTraining] = useState(project ? JSON.stringify(project.training, null, 1) : "{}");
  const [error, setError] = useState<string | null>(null);

  if (project) {
    return (
      <section>
        <h3>1. Task</h3>
        <p><b>{project.name}</b>: {project.task === "classify" ? "classify images" : "detect objects"} into {project.classes.length} classes: {project.classes.join(", ")}</p>
      </section>
    );
  }

  async function create(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    let knobs: ProjectCreate["training"];
    try {
      knobs = JSON.parse(training || "{}");
    } catch {
      setError("the training settings are not valid JSON");
      return;
    }
    // Device and budget are set in step 4; the host and a loose budget until then.
    const body: ProjectCreate = { name, task, classes: parseClasses(classes), device: "host", budget_ms: 100, training: knobs };
    try {
      onCreated(await must(api.POST("/projects", { body })));
    } catch (err) {
      setError(errorText(err));
    }
  }

  return (
    <form onSubmit={create}>
      <h3>1. Task</h3>
      <label>Project name <input name="name" value={name} onChange={(e) => setName(e.target.value)} /></label>
      <fieldset>
        <legend>What should the model do?</legend>
        <label><input type="radio" name="task" checked={task === "classify"} onChange={() => setTask("classify")} /> classify whole images</label>
        <label><input type="radio" name="task" checked={task === "detect"} onChange={() => setTask("detect")} /> detect objects (boxes)</label>
      </fieldset>
      <label>Classes (comma or one per line)
        <textarea name="classes" rows={3} value={classes} onChange={(e) => setClasses(e.target.value)} />
      </label>
      <details>
        <summary>Training settings (advanced)</summary>
        <textarea name="training" rows={4} value={training} onChange={(e) => setTraining(e.target.value)} />
      </details>
      <ErrorBox error={error} />
      <button type="submit">Create project</button>
    </form>
  );
}
