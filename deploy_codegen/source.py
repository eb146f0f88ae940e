"""The model codegen consumes: autonn's models/<id>/{model.onnx, model.ts, card.json} in the store."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from tango.store import ArtifactMissing, Store

MODEL_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_MODEL_ID = re.compile(MODEL_ID)
REQUIRED_CARD_KEYS = ("task", "classes", "input", "output")


class SourceError(ValueError):
    """The model is missing or its card lacks what a package needs; the message says which."""


def model_key(model_id: str, name: str) -> str:
    if not _MODEL_ID.match(model_id or ""):
        raise SourceError(f"model id {model_id!r} is not valid: use letters, digits, '.', '_' and '-'")
    return f"models/{model_id}/{name}"


@dataclass
class SourceModel:
    model_id: str
    card: dict[str, Any]
    onnx: bytes
    torchscript: bytes
    _torch: Any = field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.card["task"]

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def input_name(self) -> str:
        return self.card["input"].get("name", "images")

    @property
    def input_shape(self) -> list[int]:
        return [int(d) for d in self.card["input"]["shape"]]

    @property
    def output_names(self) -> list[str]:
        out = self.card["output"]
        return list(out["names"]) if "names" in out else [out["name"]]

    @cached_property
    def onnx_sha256(self) -> str:
        return hashlib.sha256(self.onnx).hexdigest()

    @cached_property
    def torchscript_sha256(self) -> str:
        return hashlib.sha256(self.torchscript).hexdigest()

    def preprocess_spec(self) -> dict[str, Any]:
        inp = self.card["input"]
        spec = {"resize": inp.get("resize", f"{self.input_shape[2]}x{self.input_shape[3]}"),
                "interpolation": "bilinear", "color": inp.get("color", "RGB"),
                "scale": inp.get("scale", "1/255"), "layout": inp.get("layout", "NCHW")}
        if inp.get("mean") is not None:
            spec.update(mean=inp["mean"], std=inp["std"])
        return spec

    def torch_module(self):
        """The TorchScript program: the PyTorch reference every package is compared against."""
        if self._torch is None:
            import torch

            self._torch = torch.jit.load(io.BytesIO(self.torchscript), map_location="cpu").eval()
        return self._torch

    def torch_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.torch_module()(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        # A model may return extras after its outputs (e.g. a detector's raw maps): the card's names count.
        outs = list(out)[: len(self.output_names)] if isinstance(out, (tuple, list)) else [out]
        return [o.float().numpy() for o in outs]


def load_source(store: Store, model_id: str) -> SourceModel:
    try:
        card = store.get_json(model_key(model_id, "card.json"))
        onnx_bytes = store.get_bytes(model_key(model_id, "model.onnx"))
        ts_bytes = store.get_bytes(model_key(model_id, "model.ts"))
    except ArtifactMissing as exc:
        raise SourceError(f"model {model_id!r} is not complete in the store ({exc}); codegen needs "
                          f"models/{model_id}/model.onnx, model.ts and card.json from autonn") from exc
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise SourceError(f"card of model {model_id!r} lacks {', '.join(missing)}")
    if card["task"] not in ("classify", "detect"):
        raise SourceError(f"card of model {model_id!r} has task {card['task']!r}; codegen knows classify and detect")
    shape = card["input"].get("shape")
    if not (isinstance(shape, list) and len(shape) == 4):
        raise SourceError(f"card of model {model_id!r}: input.shape must be [N, C, H, W], got {shape!r}")
    return SourceModel(model_id=model_id, card=card, onnx=onnx_bytes, torchscript=ts_bytes)


def source_exists(store: Store, model_id: str) -> bool:
    return store.exists(model_key(model_id, "card.json"))
