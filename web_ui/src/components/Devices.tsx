import { useEffect, useState } from "react";
import { api, must, type Device } from "../api/client";
import { Empty, ErrorBox, errorText } from "./common";

export function Devices() {
  const [devices, setDevices] = useState<Device[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    must(api.GET("/devices")).then(setDevices).catch((e) => setError(errorText(e)));
  }, []);
  return (
    <section>
      <h2>Devices</h2>
      <ErrorBox error={error} />
      {devices === null ? !error && <p>loading…</p> : devices.length === 0 ? (
        <Empty>No device profiles yet; the host is added when project_manager starts.</Empty>
      ) : (
        <table>
          <thead><tr><th>name</th><th>hardware</th><th>runtimes</th><th>latency</th><th>description</th></tr></thead>
          <tbody>
            {devices.map((d) => (
              <tr key={d.name}>
                <td>{d.name}</td><td>{[d.cpu, d.gpu, d.accelerator].filter(Boolean).join(" · ")}</td>
                <td>{d.runtimes.join(", ")}</td><td>{d.latency}</td><td>{d.description}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
