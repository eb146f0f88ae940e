import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import type { ImportJob, Run, Stage } from "../api/types";
import type { Project } from "../api/client";
import { ErrorBox } from "../components/common";
import { ProjectList } from "../components/Projects";
import { ImportResult } from "../wizard/DataStep";
import { ResultsStep, packageRows } from "../wizard/ResultsStep";
import { StageList, stageFraction } from "../wizard/RunStep";

afterEach(cleanup);

const NAMES = ["import", "version", "supernet", "latency_table", "search", "finetune", "codegen", "report"];

function stage(name: string, state: string): Stage {
  return { name, position: NAMES.indexOf(name), state, service: null, job_id: null, result: null, log: `${name} log\n`,
           started_at: null, finished_at: null };
}

function run(over: Partial<Run> = {}): Run {
  return { id: "r1", kind: "pipeline", state: "running", progress: 2.5 / 8, message: "supernet: epoch 1", result: null,
           error: null, created_at: "", updated_at: "",
           stages: NAMES.map((n, i) => stage(n, i < 2 ? "succeeded" : i === 2 ? "running" : "pending")), ...over };
}

const project = { id: "p1", name: "digits", task: "classify", classes: ["0", "1"], device: "host", budget_ms: 5,
                  targets: ["onnxruntime", "pytorch"] } as unknown as Project;

describe("StageList", () => {
  it("shows one progress bar per stage with the running stage's own share", () => {
    render(<StageList run={run()} />);
    const bars = screen.getAllByRole("progressbar");
    expect(bars).toHaveLength(8);
    expect(bars.map((b) => b.getAttribute("aria-valuenow"))).toEqual(["100", "100", "50", "0", "0", "0", "0", "0"]);
    expect(stageFraction(stage("search", "failed"), { progress: 0.9 }, 8)).toBe(0);
  });
  it("says it waits for a worker before the stages exist", () => {
    render(<StageList run={run({ stages: [] })} />);
    expect(screen.getByText(/Waiting for a worker/)).toBeTruthy();
  });
});

describe("ResultsStep", () => {
  it("compares the chosen model with the budget and offers one download per package", () => {
    const done = run({ state: "succeeded", result: { report: {
      metric: { name: "accuracy", val: 0.875, test: 0.8 }, latency: { predicted_ms: 1.25, measured_ms: 1.5 },
      arch: {}, meets_budget: true,
      packages: [{ name: "m-onnxruntime", target: "onnxruntime", report: { verified: true, max_abs_diff: 1e-6, median_ms: 0.9 } },
                 { name: "m-pytorch", target: "pytorch", report: { verified: false, median_ms: 2 } }],
    } } });
    render(<ResultsStep project={project} run={done} />);
    expect(screen.getByText("yes (ran it)")).toBeTruthy();
    expect(screen.getByText("1.00e-6")).toBeTruthy();
    expect(screen.getByText("1.250 ms")).toBeTruthy();
    expect(screen.getByText("1.500 ms")).toBeTruthy();
    expect(screen.getByText("0.8750")).toBeTruthy();
    expect(screen.getAllByRole("button").map((b) => b.textContent)).toEqual(["Download onnxruntime", "Download pytorch"]);
  });
  it("takes parity and speed from the codegen stage when the report's entries lack them", () => {
    const stages = run().stages.map((s) => s.name !== "codegen" ? s : { ...s, state: "succeeded", result: { packages: [
      { name: "m-onnxruntime", target: "onnxruntime", verified: "static", summary: { max_abs_diff: 0.002, median_ms: 0.5 } }] } });
    const done = run({ state: "succeeded", stages, result: { report: { metric: { name: "top1", val: 0.5 },
      latency: {}, arch: {}, meets_budget: false, packages: [{ name: "m-onnxruntime", target: "onnxruntime", report: null }] } } });
    expect(packageRows(done)).toEqual([{ target: "onnxruntime", verified: "static", max_abs_diff: 0.002, median_ms: 0.5 }]);
  });
  it("waits for a succeeded run", () => {
    render(<ResultsStep project={project} run={run()} />);
    expect(screen.getByText(/Results appear here when a run succeeds/)).toBeTruthy();
  });
});

describe("ImportResult and errors", () => {
  it("lists the files an import refused, with their reasons", () => {
    const job: ImportJob = { id: "j", state: "succeeded", progress: 1, message: "done", error: null,
      result: { files: 3, imported: 2, labelled: 2, rejected: [{ file: "bad.png", code: "decode", message: "not an image" }] } };
    render(<ImportResult job={job} />);
    expect(screen.getByText("2 of 3 files imported, 2 already labelled.")).toBeTruthy();
    expect(screen.getByText("bad.png")).toBeTruthy();
    expect(screen.getByText("not an image")).toBeTruthy();
  });
  it("shows a problem's detail as it is written, and nothing without one", () => {
    const { container } = render(<ErrorBox error={null} />);
    expect(container.innerHTML).toBe("");
    render(<ErrorBox error="a 0.0001 ms budget is below the fastest network measured on host" />);
    expect(screen.getByRole("alert").textContent).toBe("a 0.0001 ms budget is below the fastest network measured on host");
  });
  it("has an empty state for no projects", () => {
    render(<ProjectList projects={[]} onOpen={() => {}} />);
    expect(screen.getByText(/No projects yet/)).toBeTruthy();
  });
});
