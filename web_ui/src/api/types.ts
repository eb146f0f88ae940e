// Shapes of the responses project_manager types loosely in its OpenAPI (runs are Job records with
// stages; the labelling routes are forwarded), written down once here.

export type JobState = "queued" | "running" | "succeeded" | "failed" | "cancelled";

export interface Stage {
  name: string;
  position: number;
  state: string; // pending | running | succeeded | failed | cancelled | skipped
  service: string | null;
  job_id: string | null;
  result: Record<string, unknown> | null;
  log: string;
  started_at: string | null;
  finished_at: string | null;
}

export interface PackageReport {
  name: string | null;
  target: string | null;
  report: { verified?: boolean | string; max_abs_diff?: number; median_ms?: number; [k: string]: unknown } | null;
}

export interface RunReport {
  metric: { name: string; val: number; test?: number | null };
  latency: { predicted_ms?: number | null; measured_ms?: number | null; noise_floor?: number | null };
  arch: unknown;
  meets_budget: boolean;
  packages: PackageReport[];
}

export interface Run {
  id: string;
  kind: string;
  state: JobState;
  progress: number;
  message: string;
  result: { project_id?: string; report?: RunReport } | null;
  error: string | null;
  created_at: string;
  updated_at: string;
  stages: Stage[];
}

export interface ImportJob {
  id: string;
  state: JobState;
  progress: number;
  message: string;
  error: string | null;
  result: {
    files?: number;
    imported?: number;
    labelled?: number;
    new_classes?: string[];
    rejected?: { file: string; code: string; message: string }[];
    ignored?: unknown[];
  } | null;
}

export interface ClassInfo {
  id: number;
  name: string;
  index: number;
  count: number;
}

export interface Dataset {
  id: string;
  task: "classify" | "detect";
  classes: ClassInfo[];
  counts: { images: number; labelled: number; unlabelled: number; approved: number; rejected: number; open_suggestions: number };
}

export interface Box {
  class_id: number;
  class_name?: string;
  x1: number;
  y1: number;
  x2: number;
  y2: number;
  score?: number | null;
}

export interface Suggestion {
  id: string;
  class_id: number | null;
  class_name: string | null;
  boxes: Box[] | null;
  score: number;
}

export interface Image {
  id: string;
  width: number;
  height: number;
  source_name: string;
  content_url: string;
  label: { class_id: number | null; class_name: string | null; boxes: Box[] | null; revision: number } | null;
  suggestions: Suggestion[];
}

export interface QueueItem {
  image_id: string;
  rank: number;
  score: number | null;
  labelled: boolean;
}

export interface LatencyRange {
  device: string;
  fastest_ms: number;
  largest_ms: number;
}
