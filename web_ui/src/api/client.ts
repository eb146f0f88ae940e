// The typed client of project_manager's REST API, generated from its OpenAPI (`npm run gen:api`).
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Project = components["schemas"]["ProjectPublic"];
export type ProjectCreate = components["schemas"]["ProjectCreate"];
export type Device = components["schemas"]["DevicePublic"];
export type User = components["schemas"]["UserPublic"];

const TOKEN_KEY = "tango.token";

export function getToken(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string | null): void {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

export function authHeaders(): Record<string, string> {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

const auth: Middleware = {
  onRequest({ request }) {
    const token = getToken();
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
};

// `{path}` of the labelling proxy is a path itself ("images/abc/label"): keep its slashes.
function pathSerializer(pathname: string, params: Record<string, unknown>): string {
  return pathname.replace(/\{(\w+)\}/g, (_, name: string) => {
    const value = String(params?.[name] ?? "");
    return name === "path" ? value.split("/").map(encodeURIComponent).join("/") : encodeURIComponent(value);
  });
}

export const api = createClient<paths>({ baseUrl: window.location.origin, pathSerializer });
api.use(auth);

/** A problem+json error (or any failed response) as the sentence to show. */
export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

export function problemText(error: unknown, status?: number): string {
  if (error && typeof error === "object" && "detail" in error) {
    const detail = (error as { detail: unknown }).detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => (d && typeof d === "object" && "msg" in d ? String(d.msg) : JSON.stringify(d))).join("; ");
    }
  }
  if (typeof error === "string" && error) return error;
  return `the server answered ${status ?? "with an error"}`;
}

/** Unwrap an openapi-fetch result: its data, or throw an ApiError carrying the problem's detail. */
export async function must<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) throw new ApiError(response.status, problemText(error, response.status));
  return data as T;
}
