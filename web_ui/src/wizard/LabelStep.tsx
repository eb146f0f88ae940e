import { useCallback, useEffect, useState } from "react";
import { imageUrl, labelling } from "../api/labelling";
import type { Dataset, Image, QueueItem } from "../api/types";
import { AuthImage, Empty, ErrorBox, ProgressBar, errorText } from "../components/common";
import { BoxCanvas, type Rect } from "./BoxCanvas";
import { keyAction, keyFor } from "./keys";

type Filter = "unlabelled" | "all" | "labelled";

export function LabelStep({ projectId }: { projectId: string }) {
  const [dataset, setDataset] = useState<Dataset | null>(null);
  const [filter, setFilter] = useState<Filter>("unlabelled");
  const [images, setImages] = useState<Image[]>([]);
  const [index, setIndex] = useState(0);
  const [queue, setQueue] = useState<QueueItem[]>([]);
  const [drawing, setDrawing] = useState(false);
  const [pending, setPending] = useState<Rect | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  const refreshCounts = useCallback(() => labelling.dataset(projectId).then(setDataset), [projectId]);

  useEffect(() => {
    setError(null);
    Promise.all([
      refreshCounts(),
      labelling.images(projectId, filter).then((page) => { setImages(page.items); setIndex(0); }),
      labelling.queue(projectId).then((q) => setQueue(q.items.filter((i) => !i.labelled))).catch(() => setQueue([])),
    ]).catch((e) => setError(errorText(e)));
  }, [projectId, filter, refreshCounts]);

  const image = images[index] ?? null;
  const classes = dataset?.classes ?? [];
  const task = dataset?.task ?? "classify";
  const names = Object.fromEntries(classes.map((c) => [c.id, c.name]));

  const label = useCallback(async (classIndex: number) => {
    if (!image) return;
    const cls = classes[classIndex];
    try {
      if (task === "detect") {
        if (!pending) {
          setNote("press B and drag on the image to draw a box first");
          return;
        }
        const kept = (image.label?.boxes ?? []).map(({ class_id, x1, y1, x2, y2 }) => ({ class_id, x1, y1, x2, y2 }));
        const boxes = [...kept, { class_id: cls.id, ...pending }];
        await labelling.setLabel(projectId, image.id, { boxes });
        setImages((all) => all.map((im) => im.id === image.id
          ? { ...im, label: { class_id: null, class_name: null, boxes: boxes.map((b) => ({ ...b, class_name: names[b.class_id] })), revision: (im.label?.revision ?? 0) + 1 } }
          : im));
        setPending(null);
        setDrawing(false);
      } else {
        await labelling.setLabel(projectId, image.id, { class_id: cls.id });
        setImages((all) => all.map((im) => im.id === image.id
          ? { ...im, label: { class_id: cls.id, class_name: cls.name, boxes: null, revision: (im.label?.revision ?? 0) + 1 } }
          : im));
        setIndex((i) => Math.min(i + 1, images.length - 1));
      }
      setNote(`${image.source_name}: ${cls.name}`);
      await refreshCounts();
    } catch (e) {
      setError(errorText(e));
    }
  }, [image, classes, task, pending, projectId, images.length, names, refreshCounts]);

  const undo = useCallback(async () => {
    try {
      const done = await labelling.undo(projectId);
      setNote(done.operation ? `undid ${done.operation} (${done.reverted} image${done.reverted === 1 ? "" : "s"})` : "nothing to undo");
      const page = await labelling.images(projectId, filter);
      // Keep the images in view; only their labels change back.
      const fresh = Object.fromEntries(page.items.map((im) => [im.id, im]));
      setImages((all) => all.map((im) => (done.images.includes(im.id) ? { ...im, label: fresh[im.id]?.label ?? null } : im)));
      const back = images.findIndex((im) => done.images.includes(im.id));
      if (back >= 0) setIndex(back);
      await refreshCounts();
    } catch (e) {
      setError(errorText(e));
    }
  }, [projectId, filter, images, refreshCounts]);

  useEffect(() => {
    function onKey(e: KeyboardEvent) {
      const target = e.target as HTMLElement;
      if (["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName) || e.ctrlKey || e.metaKey || e.altKey) return;
      const action = keyAction(e.key, classes.length, task);
      if (action.kind === "none") return;
      e.preventDefault();
      if (action.kind === "class") void label(action.index);
      else if (action.kind === "move") setIndex((i) => Math.max(0, Math.min(images.length - 1, i + action.by)));
      else if (action.kind === "undo") void undo();
      else if (action.kind === "box") { setDrawing((d) => !d); setPending(null); }
    }
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [classes.length, task, label, undo, images.length]);

  const counts = dataset?.counts;
  return (
    <section className="labelling">
      <h3>3. Label</h3>
      <ErrorBox error={error} />
      {counts && (
        <div className="progress-row">
          <span data-testid="label-progress">{counts.labelled} / {counts.images} labelled</span>
          <ProgressBar value={counts.images ? counts.labelled / counts.images : 0} label="labelled" />
        </div>
      )}
      <p className="help">Keys: {classes.slice(0, 10).map((c, i) => <span key={c.id} className="key"><kbd>{keyFor(i)}</kbd>{c.name}</span>)}
        <kbd>← →</kbd> move <kbd>Z</kbd> undo {task === "detect" && <><kbd>B</kbd> draw a box, then a number for its class</>}</p>
      <label className="inline">Show <select value={filter} onChange={(e) => setFilter(e.target.value as Filter)}>
        <option value="unlabelled">unlabelled</option><option value="labelled">labelled</option><option value="all">all</option>
      </select></label>
      <div className="label-main">
        {!image ? (
          <Empty>{counts?.images ? `No ${filter} images: pick another filter or go on to the target.` : "No images yet: upload a zip in step 2."}</Empty>
        ) : (
          <figure className="current">
            <div className="stage-img" style={{ aspectRatio: `${image.width} / ${image.height}` }}>
              <AuthImage src={imageUrl(projectId, image.id)} alt={image.source_name} className="photo" />
              {task === "detect" && (
                <BoxCanvas width={image.width} height={image.height} boxes={image.label?.boxes ?? []} names={names}
                  drawing={drawing} pending={pending} onDrawn={(r) => { setPending(r); setNote("now press the class number"); }} />
              )}
            </div>
            <figcaption>
              {index + 1} / {images.length}: {image.source_name} —{" "}
              <b data-testid="current-label">{image.label ? (image.label.class_name ?? `${image.label.boxes?.length ?? 0} boxes`) : "unlabelled"}</b>
              {image.suggestions.length > 0 && <> · model suggests {image.suggestions.map((s) => `${s.class_name ?? `${s.boxes?.length} boxes`} (${s.score.toFixed(2)})`).join(", ")}</>}
              {drawing && <> · <i>drawing a box</i></>}
            </figcaption>
          </figure>
        )}
        <aside>
          <h4>Label these next</h4>
          {queue.length === 0 ? <Empty>No active-learning queue yet: it appears after a model has scored the pool.</Empty> : (
            <ol className="queue">
              {queue.slice(0, 12).map((q) => (
                <li key={q.image_id}>
                  <button className="link" onClick={() => {
                    const at = images.findIndex((im) => im.id === q.image_id);
                    if (at >= 0) setIndex(at);
                    else setNote("that image is not in the current list: show all");
                  }}>{q.image_id.slice(0, 10)}</button>{q.score !== null && ` score ${q.score.toFixed(2)}`}
                </li>
              ))}
            </ol>
          )}
        </aside>
      </div>
      {note && <p className="note" data-testid="label-note">{note}</p>}
      <div className="strip">
        {images.slice(Math.max(0, index - 6), index + 7).map((im) => (
          <span key={im.id} className={`chip${im.id === image?.id ? " active" : ""}${im.label ? " done" : ""}`}>
            {im.label?.class_name ?? (im.label ? "boxed" : "·")}
          </span>
        ))}
      </div>
    </section>
  );
}
