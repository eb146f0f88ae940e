// The project's dataset at the labelling service, through project_manager's forwarding route.
import { api, must } from "./client";
import type { Dataset, Image, ImportJob, QueueItem } from "./types";

type Query = Record<string, string | number | undefined>;

function forward<T>(method: "GET" | "POST" | "PUT", projectId: string, path: string, opts: { query?: Query; body?: unknown } = {}) {
  // The forwarded route's query and body are the labelling service's; OpenAPI types them as free-form.
  const init = { params: { path: { project_id: projectId, path }, query: opts.query as never }, body: opts.body as never };
  const route = "/projects/{project_id}/labelling/{path}" as const;
  const call = method === "GET" ? api.GET(route, init) : method === "POST" ? api.POST(route, init) : api.PUT(route, init);
  return must<T>(call as Promise<{ data?: T; error?: unknown; response: Response }>);
}

export const labelling = {
  dataset: (projectId: string) => forward<Dataset>("GET", projectId, ""),
  images: (projectId: string, state: string, limit = 200, offset = 0) =>
    forward<{ items: Image[]; total: number }>("GET", projectId, "images", { query: { state, limit, offset } }),
  setLabel: (projectId: string, imageId: string, body: Record<string, unknown>) =>
    forward<unknown>("PUT", projectId, `images/${imageId}/label`, { body }),
  undo: (projectId: string) =>
    forward<{ operation: string | null; reverted: number; images: string[] }>("POST", projectId, "undo"),
  queue: (projectId: string) =>
    forward<{ job_id: string | null; strategy: string | null; items: QueueItem[] }>("GET", projectId, "queue"),
  importJob: (projectId: string, jobId: string) =>
    must<ImportJob>(api.GET("/projects/{project_id}/imports/{job_id}", { params: { path: { project_id: projectId, job_id: jobId } } }) as Promise<{ data?: ImportJob; error?: unknown; response: Response }>),
};

export function imageUrl(projectId: string, imageId: string): string {
  return `/projects/${encodeURIComponent(projectId)}/labelling/images/${encodeURIComponent(imageId)}/content`;
}
