// Keyboard-first labelling: what a key press means.

export type KeyAction =
  | { kind: "class"; index: number }
  | { kind: "move"; by: number }
  | { kind: "undo" }
  | { kind: "box" }
  | { kind: "none" };

/** 1..9 pick classes 0..8 and 0 picks class 9; arrows move; Z undoes; B draws a box (detection). */
export function keyAction(key: string, classCount: number, task: "classify" | "detect"): KeyAction {
  if (/^[0-9]$/.test(key)) {
    const index = key === "0" ? 9 : Number(key) - 1;
    return index < classCount ? { kind: "class", index } : { kind: "none" };
  }
  if (key === "ArrowRight" || key === "ArrowDown") return { kind: "move", by: 1 };
  if (key === "ArrowLeft" || key === "ArrowUp") return { kind: "move", by: -1 };
  if (key === "z" || key === "Z") return { kind: "undo" };
  if ((key === "b" || key === "B") && task === "detect") return { kind: "box" };
  return { kind: "none" };
}

export function keyFor(index: number): string | null {
  return index < 9 ? String(index + 1) : index === 9 ? "0" : null;
}
