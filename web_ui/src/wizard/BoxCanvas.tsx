import { useEffect, useRef, useState } from "react";
import type { Box } from "../api/types";

export type Rect = { x1: number; y1: number; x2: number; y2: number };

/** Boxes over an image (pixel coordinates of the image); while `drawing`, a drag draws a new one. */
export function BoxCanvas({ width, height, boxes, drawing, pending, onDrawn, names }: {
  width: number; height: number; boxes: Box[]; drawing: boolean; pending: Rect | null;
  onDrawn: (r: Rect) => void; names: Record<number, string>;
}) {
  const ref = useRef<HTMLCanvasElement>(null);
  const [start, setStart] = useState<{ x: number; y: number } | null>(null);
  const [live, setLive] = useState<Rect | null>(null);

  useEffect(() => {
    const ctx = ref.current?.getContext("2d");
    if (!ctx) return;
    ctx.clearRect(0, 0, width, height);
    ctx.lineWidth = Math.max(1, width / 150);
    ctx.font = `${Math.max(8, width / 20)}px sans-serif`;
    for (const b of boxes) {
      ctx.strokeStyle = "#0a0";
      ctx.strokeRect(b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1);
      ctx.fillStyle = "#0a0";
      ctx.fillText(names[b.class_id] ?? String(b.class_id), b.x1 + 2, b.y1 + 12);
    }
    const r = live ?? pending;
    if (r) {
      ctx.strokeStyle = "#e60";
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(r.x1, r.y1, r.x2 - r.x1, r.y2 - r.y1);
      ctx.setLineDash([]);
    }
  }, [boxes, live, pending, width, height, names]);

  function point(e: React.MouseEvent<HTMLCanvasElement>) {
    const rect = e.currentTarget.getBoundingClientRect();
    return { x: ((e.clientX - rect.left) / rect.width) * width, y: ((e.clientY - rect.top) / rect.height) * height };
  }
  function norm(a: { x: number; y: number }, b: { x: number; y: number }): Rect {
    return { x1: Math.min(a.x, b.x), y1: Math.min(a.y, b.y), x2: Math.max(a.x, b.x), y2: Math.max(a.y, b.y) };
  }

  return (
    <canvas ref={ref} width={width} height={height} className={`boxes${drawing ? " drawing" : ""}`}
      onMouseDown={(e) => drawing && setStart(point(e))}
      onMouseMove={(e) => start && setLive(norm(start, point(e)))}
      onMouseUp={(e) => {
        if (!start) return;
        const r = norm(start, point(e));
        setStart(null);
        setLive(null);
        if (r.x2 - r.x1 > 1 && r.y2 - r.y1 > 1) onDrawn(r);
      }} />
  );
}
