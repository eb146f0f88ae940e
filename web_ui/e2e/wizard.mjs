// The wizard end to end in Debian's Chromium: node e2e/wizard.mjs <base url> <digits.zip> <extra.zip> <out dir>
// Signs up, looks at devices, creates a classification project, uploads data by drag and drop,
// labels with the keyboard, sets the target, runs the pipeline to the end and downloads a package.
// Writes a screenshot per step into <out dir> and prints a JSON summary as its last line.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, digitsZip, extraZip, out] = process.argv.slice(2);
const CLASSES = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
const TRAINING = JSON.parse(process.env.TANGO_E2E_TRAINING ?? "{}");
const summary = { steps: [] };
let shot = 0;
const t0 = Date.now();
summary.seconds = {};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"],
});
const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1200, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(30_000);
const consoleErrors = [];
page.on("pageerror", (e) => consoleErrors.push(String(e)));
summary.import_job_ids = [];
page.on("response", async (r) => {
  if (r.request().method() === "POST" && r.url().endsWith("/labelling/imports")) {
    summary.import_job_ids.push((await r.json()).id);
  }
});

async function snap(name) {
  shot += 1;
  const file = join(out, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  summary.steps.push(name);
  summary.seconds[name] = Math.round((Date.now() - t0) / 100) / 10;
}

async function drop(selector, file, name) {
  // A real drag and drop of a file: a DataTransfer holding it, dropped on the zone.
  const b64 = readFileSync(file).toString("base64");
  await page.locator(selector).evaluate((zone, [data, fileName]) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], fileName, { type: "application/zip" }));
    for (const type of ["dragenter", "dragover", "drop"]) {
      zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
    }
  }, [b64, name]);
}

try {
  await page.goto(base);
  // Sign-in errors are the server's problem+json detail, as written.
  await page.fill("input[name=username]", "ada");
  await page.fill("input[name=password]", "correct horse");
  await page.click("button[type=submit]");
  await page.getByRole("alert").waitFor();
  summary.login_error = await page.getByRole("alert").textContent();
  await snap("login-error");
  await page.getByText("No account? Sign up").click();
  await page.click("button[type=submit]");
  await page.getByRole("heading", { name: /Projects/ }).waitFor();
  await page.getByText(/No projects yet/).waitFor();
  await snap("projects-empty");

  await page.getByRole("button", { name: "Devices" }).click();
  await page.locator("td", { hasText: /^host$/ }).waitFor();
  await snap("devices");

  await page.getByRole("button", { name: "Projects" }).click();
  await page.getByRole("button", { name: "New project" }).click();
  await page.fill("input[name=name]", "digits");
  await page.fill("textarea[name=classes]", CLASSES.join(", "));
  await page.locator("details summary").click();
  await page.fill("textarea[name=training]", JSON.stringify(TRAINING));
  await snap("wizard-1-task");
  await page.getByRole("button", { name: "Create project" }).click();

  // 2. Data: the labelled digits, then a few unlabelled images and a broken file.
  await page.getByText("No data uploaded yet.").waitFor();
  await drop(".dropzone", digitsZip, "digits.zip");
  await page.getByText(/Import succeeded/).first().waitFor({ timeout: 120_000 });
  await drop(".dropzone", extraZip, "extra.zip");
  await page.locator(".rejected").waitFor({ timeout: 120_000 });
  summary.rejected = await page.locator(".rejected tbody tr").count();
  summary.import_text = await page.locator(".import").first().textContent();
  await snap("wizard-2-data");

  // 3. Label: each unlabelled image with its digit's key; Z undoes the last one; label it again.
  await page.getByRole("button", { name: /Next: Label/ }).click();
  await page.getByTestId("label-progress").waitFor();
  const before = await page.getByTestId("label-progress").textContent();
  await page.locator(".current img").waitFor();
  await snap("wizard-3-label-start");
  const labelled = [];
  for (;;) {
    const caption = await page.locator(".current figcaption").textContent();
    if (!caption.includes("unlabelled")) break;
    const digit = caption.match(/extra_(\d)_/)[1];
    const key = digit === "9" ? "0" : String(Number(digit) + 1);
    const progress = await page.getByTestId("label-progress").textContent();
    await page.keyboard.press(key);
    await page.waitForFunction((p) => document.querySelector("[data-testid=label-progress]")?.textContent !== p, progress);
    labelled.push(digit);
    if (labelled.length === 3) {
      await page.keyboard.press("z");
      await page.getByTestId("label-note").filter({ hasText: /undid/ }).waitFor();
      summary.undo_note = await page.getByTestId("label-note").textContent();
      await page.waitForFunction((p) => document.querySelector("[data-testid=label-progress]")?.textContent === p, progress);
      await page.keyboard.press(key);
      await page.waitForFunction((p) => document.querySelector("[data-testid=label-progress]")?.textContent !== p, progress);
    }
    if (labelled.length > 40) throw new Error("the keyboard labelling did not move on");
  }
  await page.keyboard.press("ArrowLeft");
  summary.labelled_with_keys = labelled;
  summary.progress = [before, await page.getByTestId("label-progress").textContent()];
  await snap("wizard-3-label-done");

  // 4. Target: a bad budget shows the server's message; then a sensible one.
  await page.getByRole("button", { name: /Next: Target/ }).click();
  await page.getByTestId("range-hint").filter({ hasText: /measured on the first run|Achievable/ }).waitFor();
  summary.range_hint = await page.getByTestId("range-hint").textContent();
  await page.fill("input[name=budget]", "-1");
  await page.getByRole("button", { name: "Save target" }).click();
  await page.getByRole("alert").waitFor();
  summary.budget_error = await page.getByRole("alert").textContent();
  await page.fill("input[name=budget]", "200");
  await page.getByRole("button", { name: "Save target" }).click();
  await page.getByText("saved").waitFor();
  await snap("wizard-4-target");

  // 5. Run: start it and watch the stages live until it ends.
  await page.getByRole("button", { name: /Next: Run/ }).click();
  await page.getByRole("button", { name: "Start run" }).click();
  await page.locator("tr.stage.running").first().waitFor({ timeout: 120_000 });
  await page.locator("tr.stage.succeeded").first().waitFor({ timeout: 120_000 });
  await snap("wizard-5-run-live");
  // Cancel it mid-way, then retry: the retried run keeps the stages that had finished.
  summary.first_run = (await page.getByTestId("run-id").textContent()).trim();
  await page.getByRole("button", { name: "Cancel" }).click();
  await page.getByTestId("run-state").filter({ hasText: /^cancelled$/ }).waitFor({ timeout: 180_000 });
  summary.finished_before_cancel = await page.locator("tr.stage.succeeded").count();
  await snap("wizard-5-run-cancelled");
  await page.getByRole("button", { name: "Retry" }).click();
  await page.waitForFunction((first) => {
    const code = document.querySelector("[data-testid=run-id]");
    return code && code.textContent.trim() !== first;
  }, summary.first_run);
  summary.retried_run = (await page.getByTestId("run-id").textContent()).trim();
  await page.locator("tr.stage", { hasText: "carried over" }).first().waitFor({ timeout: 120_000 });
  await page.getByTestId("run-state").filter({ hasText: /succeeded|failed|cancelled/ }).waitFor({ timeout: 600_000 });
  summary.run_state = await page.getByTestId("run-state").textContent();
  summary.carried_over = await page.locator("tr.stage", { hasText: "carried over" }).count();
  if (summary.run_state !== "succeeded") {
    await snap("wizard-5-run-failed");
    throw new Error(`the run ended ${summary.run_state}: ${await page.locator("table.stages").textContent()}`);
  }
  await page.locator("iframe.report").waitFor();
  const report = page.frameLocator("iframe.report");
  summary.report_svgs = await report.locator("svg").count();
  await snap("wizard-5-run-done");

  // 6. Results: the model against the budget, and a package download.
  await page.getByRole("button", { name: /Next: Results/ }).click();
  summary.results = await page.locator("table.results").textContent();
  summary.packages = await page.locator("table.packages").textContent();
  const [dl] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download onnxruntime" }).click()]);
  const pkg = join(out, dl.suggestedFilename());
  await dl.saveAs(pkg);
  const bytes = readFileSync(pkg);
  summary.package = { name: dl.suggestedFilename(), bytes: bytes.length, gzip: bytes[0] === 0x1f && bytes[1] === 0x8b };
  await snap("wizard-6-results");
  summary.ok = true;
} catch (e) {
  summary.ok = false;
  summary.error = String(e?.stack ?? e);
  await snap("failure").catch(() => {});
} finally {
  summary.page_errors = consoleErrors;
  await browser.close();
  writeFileSync(join(out, "summary.json"), JSON.stringify(summary, null, 2));
  console.log(JSON.stringify(summary));
  process.exit(summary.ok ? 0 : 1);
}
