/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// `npm run dev` proxies the API to a running project_manager (TANGO_PM_URL, default :8080).
const api = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.TANGO_PM_URL ?? "http://127.0.0.1:8080";
const routes = ["/auth", "/projects", "/devices", "/docs", "/openapi.json"];

export default defineConfig({
  plugins: [react()],
  server: { proxy: Object.fromEntries(routes.map((r) => [r, api])) },
  test: { environment: "jsdom", include: ["src/**/*.test.{ts,tsx}"] },
});
