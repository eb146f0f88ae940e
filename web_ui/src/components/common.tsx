import { useEffect, useState } from "react";
import { authHeaders } from "../api/client";

export function ErrorBox({ error }: { error: string | null | undefined }) {
  if (!error) return null;
  return <p className="error" role="alert">{error}</p>;
}

export function Empty({ children }: { children: React.ReactNode }) {
  return <p className="empty">{children}</p>;
}

export function ProgressBar({ value, label }: { value: number; label?: string }) {
  const pct = Math.round(Math.min(Math.max(value, 0), 1) * 100);
  return (
    <div className="bar" role="progressbar" aria-valuenow={pct} aria-valuemin={0} aria-valuemax={100} aria-label={label}>
      <div className="fill" style={{ width: `${pct}%` }} />
      <span>{pct}%</span>
    </div>
  );
}

/** Fetch a protected URL with the user's token (an <img> or <iframe> cannot send it). */
export async function fetchAuthed(url: string): Promise<Response> {
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) {
    let detail = `the server answered ${response.status}`;
    try {
      detail = (await response.json()).detail ?? detail;
    } catch {
      /* not problem+json */
    }
    throw new Error(detail);
  }
  return response;
}

export function AuthImage({ src, alt, className }: { src: string; alt: string; className?: string }) {
  const [url, setUrl] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    let made: string | null = null;
    fetchAuthed(src).then((r) => r.blob()).then((b) => {
      made = URL.createObjectURL(b);
      if (live) setUrl(made);
    }).catch(() => setUrl(null));
    return () => {
      live = false;
      if (made) URL.revokeObjectURL(made);
    };
  }, [src]);
  return url ? <img src={url} alt={alt} className={className} /> : <div className={`${className ?? ""} placeholder`}>loading…</div>;
}

/** Save a protected download under `filename`. */
export async function download(url: string, filename: string): Promise<void> {
  const blob = await (await fetchAuthed(url)).blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
