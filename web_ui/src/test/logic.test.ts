import { describe, expect, it } from "vitest";
import { problemText } from "../api/client";
import { parseEvents } from "../sse";
import { keyAction, keyFor } from "../wizard/keys";
import { rangeHint } from "../wizard/TargetStep";
import { parseClasses } from "../wizard/TaskStep";

describe("parseEvents", () => {
  it("splits complete events and keeps the unfinished rest", () => {
    const { events, rest } = parseEvents('event: run\ndata: {"state":"running"}\n\nevent: end\ndata: {"st');
    expect(events).toEqual([{ event: "run", data: '{"state":"running"}' }]);
    expect(rest).toBe('event: end\ndata: {"st');
    const more = parseEvents(rest + 'ate":"succeeded"}\r\n\r\n');
    expect(more.events).toEqual([{ event: "end", data: '{"state":"succeeded"}' }]);
    expect(more.rest).toBe("");
  });
});

describe("keyAction", () => {
  it("maps number keys to classes, 0 to the tenth, and refuses keys past the classes", () => {
    expect(keyAction("1", 3, "classify")).toEqual({ kind: "class", index: 0 });
    expect(keyAction("3", 3, "classify")).toEqual({ kind: "class", index: 2 });
    expect(keyAction("4", 3, "classify")).toEqual({ kind: "none" });
    expect(keyAction("0", 10, "classify")).toEqual({ kind: "class", index: 9 });
    expect(keyFor(9)).toBe("0");
    expect(keyFor(10)).toBeNull();
  });
  it("moves with arrows, undoes with Z and draws boxes with B only when detecting", () => {
    expect(keyAction("ArrowRight", 2, "classify")).toEqual({ kind: "move", by: 1 });
    expect(keyAction("ArrowLeft", 2, "classify")).toEqual({ kind: "move", by: -1 });
    expect(keyAction("z", 2, "classify")).toEqual({ kind: "undo" });
    expect(keyAction("b", 2, "classify")).toEqual({ kind: "none" });
    expect(keyAction("B", 2, "detect")).toEqual({ kind: "box" });
  });
});

describe("small helpers", () => {
  it("reads classes from commas and lines", () => {
    expect(parseClasses("cat, dog\n bird ,,\n")).toEqual(["cat", "dog", "bird"]);
  });
  it("shows a problem's detail as written, and validation messages joined", () => {
    expect(problemText({ detail: "wrong username or password" }, 401)).toBe("wrong username or password");
    expect(problemText({ detail: [{ msg: "field required" }, { msg: "too short" }] }, 422)).toBe("field required; too short");
    expect(problemText(undefined, 502)).toBe("the server answered 502");
  });
  it("hints the achievable budget, or that the first run measures it", () => {
    expect(rangeHint("unknown")).toMatch(/measured on the first run/);
    expect(rangeHint({ device: "host", fastest_ms: 0.41234, largest_ms: 2.5 })).toBe(
      "Achievable on host: 0.412 ms (fastest network) to 2.50 ms (largest).");
  });
});
