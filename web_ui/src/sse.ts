// Server-sent events over fetch: EventSource cannot send the Authorization header.

export interface SseEvent {
  event: string;
  data: string;
}

/** Split a text/event-stream chunk buffer into complete events and the unfinished rest. */
export function parseEvents(buffer: string): { events: SseEvent[]; rest: string } {
  const events: SseEvent[] = [];
  const blocks = buffer.replace(/\r\n/g, "\n").split("\n\n");
  const rest = blocks.pop() ?? "";
  for (const block of blocks) {
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (data.length) events.push({ event, data: data.join("\n") });
  }
  return { events, rest };
}

/** Read the stream at `url` until it ends or `signal` aborts, calling `onEvent` for each event. */
export async function readEvents(url: string, headers: Record<string, string>, onEvent: (e: SseEvent) => void,
                                 signal: AbortSignal): Promise<void> {
  const response = await fetch(url, { headers: { ...headers, Accept: "text/event-stream" }, signal });
  if (!response.ok || !response.body) {
    let detail = `the event stream answered ${response.status}`;
    try {
      detail = (await response.json()).detail ?? detail;
    } catch {
      /* not problem+json */
    }
    throw new Error(detail);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const parsed = parseEvents(buffer + value);
    buffer = parsed.rest;
    parsed.events.forEach(onEvent);
  }
}
