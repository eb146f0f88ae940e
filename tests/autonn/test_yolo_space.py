"""The YOLOv8-style detector space: configs, weight-sharing parity with real Ultralytics modules,
blocks for the latency table, export, and the task hooks (loss, distillation, mAP)."""

from __future__ import annotations

import io
import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from autonn.spaces.base import SEARCH_SPACES
from autonn.spaces.yolo import DetectionDataset, YoloSearchSpace, collate_detection
from tango.sampledata import SHAPE_CLASSES, make_shapes, write_yolo_dataset

NC = len(SHAPE_CLASSES)


@pytest.fixture(scope="module")
def space() -> YoloSearchSpace:
    return YoloSearchSpace()


@pytest.fixture(scope="module")
def supernet(space):
    torch.manual_seed(0)
    net = space.build_supernet(num_classes=NC)
    # A few train-mode passes so BN running statistics differ per channel slice, and the
    # parity checks prove that statistics are copied too.
    net.train()
    with torch.no_grad():
        for arch in (space.largest(), space.smallest(), space.sample(random.Random(5))):
            net.set_active(arch)
            net(torch.rand(2, 3, 160, 160))
    return net.eval()


def _loader(samples, size, batch_size=4):
    return torch.utils.data.DataLoader(DetectionDataset(samples, size=size), batch_size=batch_size,
                                       collate_fn=collate_detection)


# --- configs ----------------------------------------------------------------------------------
def test_registered_and_large(space):
    assert SEARCH_SPACES["yolo_det"] is YoloSearchSpace and space.task == "detect"
    assert space.cardinality() >= 10 ** 8


def test_configs_are_valid_and_encoded(space):
    rng = random.Random(0)
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(20)]
    for arch in archs:
        assert space.validate(arch) == arch
        assert space.input_size(arch) % 32 == 0
        vec = space.encode(arch)
        assert len(vec) == len(space.encode(space.largest())) and all(0.0 <= v <= 1.0 for v in vec)
    child = space.crossover(archs[2], archs[3], rng)
    assert space.validate(space.mutate(child, rng, prob=0.5))
    assert space.arch_key(archs[0]) == space.arch_key(dict(reversed(list(archs[0].items()))))
    assert space.encode(space.largest()) != space.encode(space.smallest())


@pytest.mark.parametrize(("change", "message"), [
    ({"depths": [1, 2, 3, 7, 1, 1, 1, 1]}, r"depths\[3\]=7 is not one of 1, 2, 3"),
    ({"widths": [1.0] * 5 + [0.25] + [1.0] * 2}, r"widths\[5\]=0.25 is not one of 0.5, 0.75, 1.0"),
    ({"resolution": 200}, r"resolution=200 is not one of"),
    ({"depths": [1, 2]}, r"depths must be a list of 8"),
    ({"kernel": 3}, r"unknown genes: kernel"),
])
def test_validate_names_the_bad_gene(space, change, message):
    with pytest.raises(ValueError, match=message):
        space.validate({**space.largest(), **change})


# --- weight sharing -----------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["largest", "smallest", 1, 2, 3])
def test_extracted_ultralytics_model_matches_supernet(space, supernet, which):
    from ultralytics.nn.modules import C2f, SPPF, Concat, Conv, Detect
    from ultralytics.nn.tasks import DetectionModel

    arch = getattr(space, which)() if isinstance(which, str) else space.sample(random.Random(which))
    size = space.input_size(arch)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    supernet.set_active(arch)
    with torch.no_grad():
        want, raw = supernet(x)
        model = supernet.extract(arch)
        got = model(x)
    assert isinstance(model, DetectionModel) and not model.training
    kinds = {type(m) for m in model.model}
    assert kinds == {Conv, C2f, SPPF, Concat, nn.Upsample, Detect}
    assert got.shape == (2, 4 + NC, sum((size // s) ** 2 for s in (8, 16, 32)))
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-5)
    assert [f.shape[1] for f in raw["feats"]] == [model.model[-1].cv2[i][0].conv.in_channels for i in range(3)]
    assert not set(p.data_ptr() for p in model.parameters()) & set(p.data_ptr() for p in supernet.parameters())


# --- blocks -------------------------------------------------------------------------------------
def test_all_blocks_cover_every_subnet(space):
    rows = list(space.all_blocks())
    keys = {s.key for s in rows}
    assert len(keys) == len(rows) and 300 <= len(rows) <= 2500
    rng = random.Random(3)
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(200)]:
        missing = [s.key for s in space.blocks(arch) if s.key not in keys]
        assert not missing, missing[:3]


@pytest.mark.parametrize("which", ["smallest", 7])
def test_block_flops_add_up_to_the_network(space, supernet, which):
    from torch.utils.flop_counter import FlopCounterMode

    def flops(module, shape):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = module.eval()(torch.zeros(shape))
        return counter.get_total_flops(), out

    arch = getattr(space, which)() if isinstance(which, str) else space.sample(random.Random(which))
    total = 0
    for spec in space.blocks(arch):
        f, out = flops(space.build_block(spec.key, num_classes=NC), spec.input_shape)
        assert torch.isfinite(out).all()
        total += f
    size = space.input_size(arch)
    network, _ = flops(supernet.extract(arch), (1, 3, size, size))
    assert total == pytest.approx(network, rel=0.01)


def test_head_block_outputs_decoded_predictions(space):
    spec = next(s for s in space.all_blocks() if s.key.startswith("head:"))
    out = space.build_block(spec.key, num_classes=5)(torch.zeros(spec.input_shape))
    assert out.shape == (1, 4 + 5, spec.input_shape[2] * spec.input_shape[3])
    with pytest.raises(ValueError, match="unknown block kind"):
        space.build_block("nope:c8:r10", num_classes=5)


# --- export -------------------------------------------------------------------------------------
def test_onnx_export_and_trace_of_smallest(space, supernet):
    import onnxruntime as ort

    arch = space.smallest()
    size = space.input_size(arch)
    model = supernet.extract(arch)
    x = torch.rand(1, 3, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript exporter / tracer deprecation notices
        traced = torch.jit.trace(model, torch.zeros(1, 3, size, size))
        buf = io.BytesIO()
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), buf, opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["output0"],
                          dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}})
        want = model(x)
        assert torch.allclose(traced(x), want, atol=1e-5)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == tuple(want.shape) == (1, 4 + NC, 525)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


# --- task hooks ---------------------------------------------------------------------------------
def test_supernet_training_lowers_the_loss(space):
    torch.manual_seed(0)
    net = space.build_supernet(num_classes=NC).train()
    arch = {**space.largest(), "resolution": 160}
    net.set_active(arch)
    batches = list(_loader(make_shapes(16, size=160), 160, batch_size=8))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for step in range(14):
        images, targets = batches[step % 2]
        loss = space.loss(net(images), targets)
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-4:]) < 0.75 * np.mean(losses[:4]), losses


def test_a_fine_tunes_teacher_gives_raw_head_outputs(space, supernet):
    from autonn.spaces.yolo_blocks import raw_outputs
    from autonn.train import standalone_teacher

    loader = _loader(make_shapes(4, size=96), 96, batch_size=2)
    teacher = standalone_teacher(space=space, teacher=supernet, loader=loader, device=torch.device("cpu"), batches=1)
    images, _ = next(iter(loader))
    with torch.no_grad():
        out = teacher(torch.nn.functional.interpolate(images, size=space.input_size(space.largest())))
    # Raw outputs: distillation takes the KL between DFL distributions, not the decoded boxes' CIoU.
    assert not teacher.training and raw_outputs(out) is not None


def test_distill_loss_across_sizes_and_from_an_exported_teacher(space, supernet):
    images, _ = next(iter(_loader(make_shapes(2, size=192), 192, batch_size=2)))
    supernet.train()
    try:
        with torch.no_grad():
            supernet.set_active(space.largest())
            teacher = supernet(torch.nn.functional.interpolate(images, size=224))
        supernet.set_active(space.smallest())
        student = supernet(torch.nn.functional.interpolate(images, size=160))
        loss = space.distill_loss(student, teacher)
        assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
        loss.backward()
        assert supernet.stem.conv.weight.grad is not None
        # A deployed (export-mode) teacher gives only decoded predictions.
        with torch.no_grad():
            decoded = supernet.extract(space.largest())(torch.nn.functional.interpolate(images, size=320))
        supernet.set_active(space.smallest())
        student = supernet(torch.nn.functional.interpolate(images, size=160))
        loss = space.distill_loss(student, decoded)
        assert torch.isfinite(loss) and loss > 0
    finally:
        supernet.zero_grad(set_to_none=True)
        supernet.eval()


class _Oracle(nn.Module):
    """Answers each batch with its own targets as decoded predictions (score 0.9)."""

    def __init__(self, batches, size: int, wrong_every: int = 0):
        super().__init__()
        self.targets, self.size, self.wrong_every, self.i = [t for _, t in batches], size, wrong_every, 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        t, self.i = self.targets[self.i], self.i + 1
        out = torch.zeros(images.shape[0], 4 + NC, 64)
        for b in range(images.shape[0]):
            rows = t["batch_idx"] == b
            cls = t["cls"][rows, 0].long()
            if self.wrong_every:
                cls[:: self.wrong_every] = (cls[:: self.wrong_every] + 1) % NC
            out[b, :4, : len(cls)] = (t["bboxes"][rows] * self.size).T
            out[b, 4 + cls, torch.arange(len(cls))] = 0.9
        return out


def test_evaluate_is_map50_95(space, supernet):
    batches = list(_loader(make_shapes(6, size=192, seed=4), 192, batch_size=3))
    arch = space.smallest()  # input 160: evaluate resizes the 192 images
    # Ultralytics' 101-point interpolation tops out at 0.995 for perfect predictions.
    assert space.evaluate(_Oracle(batches, 160), batches, arch=arch, device=torch.device("cpu")) == \
        pytest.approx(0.995, abs=1e-6)
    partly = space.evaluate(_Oracle(batches, 160, wrong_every=2), batches, arch=arch, device=torch.device("cpu"))
    assert 0.0 < partly < 0.9
    value = space.evaluate(supernet, batches, arch=arch, device=torch.device("cpu"))
    assert isinstance(value, float) and 0.0 <= value <= 1.0


# --- data ---------------------------------------------------------------------------------------
def test_dataset_letterboxes_and_collate_normalises():
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    boxes = np.array([[2, 20, 10, 60, 50]], dtype=np.float32)
    tensor, out = DetectionDataset([(image, boxes)], size=100)[0]
    assert tensor.shape == (3, 100, 100) and tensor.dtype == torch.float32
    assert out.tolist() == [[2, 10, 30, 30, 50]]  # scale 0.5, 25 px of padding on top
    images, targets = collate_detection([(tensor, out), (tensor, np.zeros((0, 5), np.float32))])
    assert images.shape == (2, 3, 100, 100)
    assert targets["batch_idx"].tolist() == [0.0] and targets["cls"].tolist() == [[2.0]]
    assert torch.allclose(targets["bboxes"], torch.tensor([[0.2, 0.4, 0.2, 0.2]]))


def test_ultralytics_reads_written_dataset(tmp_path):
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    samples = make_shapes(4, size=96, seed=2)
    data = check_det_dataset(str(write_yolo_dataset(samples, tmp_path / "ds", SHAPE_CLASSES)), autodownload=False)
    assert data["names"] == dict(enumerate(SHAPE_CLASSES))
    dataset = YOLODataset(img_path=data["train"], data=data, task="detect", imgsz=96, augment=False)
    labels = {label["im_file"].rsplit("/", 1)[1]: label for label in dataset.labels}
    for i, (_, boxes) in enumerate(samples):
        label = labels[f"{i:06d}.png"]
        assert label["cls"].ravel().tolist() == boxes[:, 0].tolist()
        xywh = np.stack([(boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 2] + boxes[:, 4]) / 2,
                         boxes[:, 3] - boxes[:, 1], boxes[:, 4] - boxes[:, 2]], 1) / 96
        np.testing.assert_allclose(label["bboxes"], xywh, atol=1e-5)
