import { useEffect, useState } from "react";
import { api, must, type Project } from "../api/client";
import { Empty, ErrorBox, errorText } from "./common";

export function ProjectList({ projects, onOpen }: { projects: Project[]; onOpen: (p: Project) => void }) {
  if (projects.length === 0) return <Empty>No projects yet. Start one with “New project”.</Empty>;
  return (
    <table>
      <thead><tr><th>name</th><th>task</th><th>classes</th><th>device</th><th>budget</th><th /></tr></thead>
      <tbody>
        {projects.map((p) => (
          <tr key={p.id}>
            <td>{p.name}</td><td>{p.task}</td><td>{p.classes.length}</td><td>{p.device}</td><td>{p.budget_ms} ms</td>
            <td><button onClick={() => onOpen(p)}>Open</button></td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function Projects({ onOpen, onNew }: { onOpen: (p: Project) => void; onNew: () => void }) {
  const [projects, setProjects] = useState<Project[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    must(api.GET("/projects")).then(setProjects).catch((e) => setError(errorText(e)));
  }, []);
  return (
    <section>
      <h2>Projects <button onClick={onNew}>New project</button></h2>
      <ErrorBox error={error} />
      {projects === null ? !error && <p>loading…</p> : <ProjectList projects={projects} onOpen={onOpen} />}
    </section>
  );
}
