import { useEffect, useState } from "react";
import { api, getToken, setToken, type Project, type User } from "./api/client";
import { Devices } from "./components/Devices";
import { Login } from "./components/Login";
import { Projects } from "./components/Projects";
import { Wizard } from "./wizard/Wizard";

type View = { kind: "projects" } | { kind: "devices" } | { kind: "wizard"; project: Project | null; key: number };

export function App() {
  const [user, setUser] = useState<User | null>(null);
  const [checked, setChecked] = useState(false);
  const [view, setView] = useState<View>({ kind: "projects" });

  function loadMe() {
    if (!getToken()) {
      setChecked(true);
      return;
    }
    api.GET("/auth/me").then(({ data }) => {
      if (data) setUser(data);
      else setToken(null);
      setChecked(true);
    });
  }
  useEffect(loadMe, []);

  if (!checked) return null;
  return (
    <>
      <header>
        <h1>Tango</h1>
        {user && (
          <nav>
            <button onClick={() => setView({ kind: "projects" })}>Projects</button>
            <button onClick={() => setView({ kind: "devices" })}>Devices</button>
            <span className="who">{user.username}</span>
            <button className="link" onClick={() => { setToken(null); setUser(null); }}>Sign out</button>
          </nav>
        )}
      </header>
      <main>
        {!user ? <Login onSignedIn={loadMe} /> : view.kind === "projects" ? (
          <Projects onOpen={(p) => setView({ kind: "wizard", project: p, key: Date.now() })}
                    onNew={() => setView({ kind: "wizard", project: null, key: Date.now() })} />
        ) : view.kind === "devices" ? <Devices /> : <Wizard key={view.key} initial={view.project} />}
      </main>
    </>
  );
}
