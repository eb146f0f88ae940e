"""Running autonn's exported model (models/<id>/model.onnx + card.json) with ONNX Runtime, using the
card's preprocessing (RGB, NCHW, resize to the card's input, scale 1/255): class probabilities for
classify models (`logits`), decoded boxes for detect models (Ultralytics-style `output0`,
(N, 4 + nc, anchors): cx, cy, w, h in input pixels, then per-class scores)."""

from __future__ import annotations

import io
import json
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from labelling.errors import Invalid
from tango.store import Store


def model_keys(model_id: str) -> tuple[str, str]:
    return f"models/{model_id}/model.onnx", f"models/{model_id}/card.json"


@dataclass
class Model:
    model_id: str
    card: dict
    task: str
    classes: list[str]
    height: int
    width: int
    scale: float
    bgr: bool
    session: object  # onnxruntime.InferenceSession
    input_name: str
    output_name: str
    max_batch: int | None  # None: any batch size


def read_card(store: Store, model_id: str) -> dict:
    onnx_key, card_key = model_keys(model_id)
    if not store.exists(onnx_key) or not store.exists(card_key):
        raise Invalid(f"model {model_id!r} has no {onnx_key} and {card_key} in the store; export it from autonn")
    return json.loads(store.get_bytes(card_key))


def _scale(text: object) -> float:
    if isinstance(text, (int, float)):
        return float(text)
    num, _, den = str(text).partition("/")
    return float(num) / float(den or 1)


def load_model(store: Store, model_id: str, *, threads: int = 1) -> Model:
    card = read_card(store, model_id)
    return model_from_bytes(store.get_bytes(model_keys(model_id)[0]), card, model_id=model_id, threads=threads)


def model_from_bytes(onnx_bytes: bytes, card: dict, *, model_id: str = "", threads: int = 1) -> Model:
    import onnxruntime as ort

    spec = card.get("input", {})
    shape = spec.get("shape") or [1, 3, 224, 224]
    if len(shape) != 4 or spec.get("layout", "NCHW") != "NCHW" or int(shape[1]) != 3:
        raise Invalid(f"model {model_id!r}: only 3-channel NCHW inputs are supported, the card says {spec}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    batch_dim = first.shape[0]
    return Model(model_id=model_id, card=card, task=card.get("task", "classify"), classes=list(card.get("classes", [])),
                 height=int(shape[2]), width=int(shape[3]), scale=_scale(spec.get("scale", "1/255")),
                 bgr=str(spec.get("color", "RGB")).upper() == "BGR", session=session,
                 input_name=spec.get("name", first.name),
                 output_name=card.get("output", {}).get("name", session.get_outputs()[0].name),
                 max_batch=batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None)


def preprocess(model: Model, images: list[np.ndarray]) -> np.ndarray:
    """HxWx3 uint8 RGB arrays -> float32 NCHW at the card's size (bilinear, as autonn trains)."""
    out = np.empty((len(images), 3, model.height, model.width), dtype=np.float32)
    for i, image in enumerate(images):
        im = Image.fromarray(image)
        if im.size != (model.width, model.height):
            im = im.resize((model.width, model.height), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.float32)
        if model.bgr:
            arr = arr[..., ::-1]
        out[i] = arr.transpose(2, 0, 1) * model.scale
    return out


def run(model: Model, images: list[np.ndarray]) -> np.ndarray:
    batch = preprocess(model, images)
    step = model.max_batch or len(images)
    outs = [model.session.run([model.output_name], {model.input_name: batch[i:i + step]})[0]
            for i in range(0, len(images), step)]
    return np.concatenate(outs)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_probabilities(model: Model, images: list[np.ndarray]) -> np.ndarray:
    return softmax(run(model, images).reshape(len(images), -1).astype(np.float64))


@dataclass
class Detections:
    boxes: np.ndarray  # (k, 4) x1 y1 x2 y2 in the original image's pixels
    scores: np.ndarray  # (k, nc) per-class scores of each kept box
    best_background: float  # 1 - the highest score anywhere in the image

    @property
    def classes(self) -> np.ndarray:
        return self.scores.argmax(axis=1) if len(self.scores) else np.zeros(0, dtype=np.int64)

    @property
    def confidence(self) -> np.ndarray:
        return self.scores.max(axis=1) if len(self.scores) else np.zeros(0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order, keep = np.argsort(-scores), []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i, order = order[0], order[1:]
        keep.append(int(i))
        xx1, yy1 = np.maximum(boxes[i, 0], boxes[order, 0]), np.maximum(boxes[i, 1], boxes[order, 1])
        xx2, yy2 = np.minimum(boxes[i, 2], boxes[order, 2]), np.minimum(boxes[i, 3], boxes[order, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        order = order[inter / (areas[i] + areas[order] - inter + 1e-9) <= iou]
    return keep


def decode(output: np.ndarray, *, size: tuple[int, int], input_size: tuple[int, int], conf: float,
           iou: float = 0.5, max_det: int = 100) -> Detections:
    """One image's (4 + nc, anchors) output -> boxes above `conf`, class-aware NMS, in image pixels."""
    (w, h), (iw, ih) = size, input_size
    scores = output[4:].T.astype(np.float64)  # (anchors, nc)
    best = scores.max(axis=1) if scores.size else np.zeros(0)
    keep = np.flatnonzero(best >= conf)
    cx, cy, bw, bh = (output[k, keep].astype(np.float64) for k in range(4))
    boxes = np.stack([(cx - bw / 2) * w / iw, (cy - bh / 2) * h / ih, (cx + bw / 2) * w / iw,
                      (cy + bh / 2) * h / ih], axis=1) if keep.size else np.zeros((0, 4))
    boxes = np.clip(boxes, 0, [w, h, w, h])
    cls_scores = scores[keep]
    # Offsetting boxes by class keeps NMS from merging boxes of different classes.
    shifted = boxes + (cls_scores.argmax(axis=1) * (w + h + 1))[:, None] if keep.size else boxes
    kept = nms(shifted, best[keep], iou)[:max_det] if keep.size else []
    valid = [i for i in kept if boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]]
    return Detections(boxes[valid], cls_scores[valid], 1.0 - float(best.max()) if best.size else 1.0)


def detect(model: Model, images: list[np.ndarray], *, conf: float, iou: float = 0.5,
           max_det: int = 100) -> list[Detections]:
    out = run(model, images)
    return [decode(out[i], size=(im.shape[1], im.shape[0]), input_size=(model.width, model.height), conf=conf,
                   iou=iou, max_det=max_det) for i, im in enumerate(images)]


def decode_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def in_batches(work: Callable[[list], object], items: list, *, batch: int, concurrency: int,
               ) -> Iterator[tuple[list, object]]:
    """(batch, work(batch)) in order, at most `concurrency` batches in flight: the pool never holds
    more than that many batches of decoded images, however large the job."""
    chunks = [items[i:i + batch] for i in range(0, len(items), batch)]
    pending: deque[tuple[list, Future]] = deque()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="score") as pool:
        try:
            for chunk in chunks:
                if len(pending) >= concurrency:
                    done_chunk, fut = pending.popleft()
                    yield done_chunk, fut.result()
                pending.append((chunk, pool.submit(work, chunk)))
            while pending:
                done_chunk, fut = pending.popleft()
                yield done_chunk, fut.result()
        finally:
            for _, fut in pending:  # a cancelled job stops here; nothing more is started
                fut.cancel()
