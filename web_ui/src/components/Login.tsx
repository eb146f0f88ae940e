import { useState } from "react";
import { api, must, setToken } from "../api/client";
import { ErrorBox, errorText } from "./common";

export function Login({ onSignedIn }: { onSignedIn: () => void }) {
  const [mode, setMode] = useState<"in" | "up">("in");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      if (mode === "up") await must(api.POST("/auth/register", { body: { username, password } }));
      const data = await must(api.POST("/auth/token", { body: { username, password, name: "web ui" } }));
      setToken((data as { token: string }).token);
      onSignedIn();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="card narrow" onSubmit={submit}>
      <h2>{mode === "in" ? "Sign in" : "Create an account"}</h2>
      <label>Username <input name="username" value={username} onChange={(e) => setUsername(e.target.value)} autoFocus /></label>
      <label>Password <input name="password" type="password" value={password} onChange={(e) => setPassword(e.target.value)} /></label>
      <ErrorBox error={error} />
      <button type="submit" disabled={busy}>{mode === "in" ? "Sign in" : "Sign up"}</button>
      <button type="button" className="link" onClick={() => setMode(mode === "in" ? "up" : "in")}>
        {mode === "in" ? "No account? Sign up" : "Have an account? Sign in"}
      </button>
    </form>
  );
}
