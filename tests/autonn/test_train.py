from __future__ import annotations

import functools
import io
import random
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from autonn.spaces.base import get_search_space
from autonn.train import (SeededShuffle, TrainConfig, epoch_permutation, evaluate_subnet, extract_copy, finetune,
                          load_checkpoint, recalibrate_bn, standalone_teacher, train_supernet)

CPU = torch.device("cpu")
# Small enough for one shared CPU thread; resolutions below the data's 24 px exercise resizing.
SPACE_OPTIONS = dict(resolutions=(16, 20, 24), base_widths=(8, 16, 32, 64), stem_width=8, stem_stride=1)


@functools.lru_cache(maxsize=4)
def _all_digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from tango.sampledata import make_digits
    except ImportError:  # inline fallback: the same digits, upscaled here
        from sklearn.datasets import load_digits
        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
        return x, torch.tensor(d.target, dtype=torch.long)
    images, labels = make_digits(size=size, seed=0)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    return x.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.long)


def digits(n: int, size: int = 24, offset: int = 0) -> TensorDataset:
    """Upscaled 3-channel sklearn digits as float images in [0, 1]."""
    x, y = _all_digits(size)
    return TensorDataset(x[offset:offset + n].clone(), y[offset:offset + n].clone())


def loaders(n_train: int, n_val: int, batch: int = 32, seed: int = 0):
    train = digits(n_train)
    val = digits(n_val, offset=n_train)
    return (DataLoader(train, batch_size=batch, sampler=SeededShuffle(len(train), seed=seed), drop_last=True),
            DataLoader(val, batch_size=128))


def make_supernet(seed: int = 0):
    space = get_search_space("resnet_cls", **SPACE_OPTIONS)
    torch.manual_seed(seed)
    return space, space.build_supernet(num_classes=10)


class MemoryCheckpointer:
    def __init__(self):
        self.saved: dict[int, bytes] = {}

    def save(self, epoch: int, payload: bytes) -> None:
        self.saved[epoch] = payload

    def load_latest(self):
        if not self.saved:
            return None
        epoch = max(self.saved)
        return epoch, self.saved[epoch]


class Stop(Exception):
    pass


def test_seeded_shuffle_is_a_function_of_seed_and_epoch():
    s = SeededShuffle(50, seed=3)
    s.set_epoch(2)
    assert list(s) == epoch_permutation(50, 3, 2) == list(s)
    assert sorted(s) == list(range(50))
    s.set_epoch(3)
    assert list(s) != epoch_permutation(50, 3, 2)


def test_supernet_training_learns_largest_and_smallest():
    space, net = make_supernet()
    train, val = loaders(640, 320)
    cfg = TrainConfig(epochs=3, lr=0.1, n_random=1, warmup_epochs=0.3, calib_batches=4)
    fractions: list[float] = []
    start = time.perf_counter()
    result = train_supernet(space=space, supernet=net, train_loader=train, val_loader=val, config=cfg, device=CPU,
                            progress=lambda f, msg, m: fractions.append(f))
    elapsed = time.perf_counter() - start
    assert len(result.history) == result.epochs_run == 3 and result.resumed_from_epoch is None
    print(f"3 epochs on 640 digits: {elapsed:.1f}s, history {result.history}")
    assert result.final["val_largest"] > 0.5, result.history
    assert result.final["val_smallest"] > 0.3, result.history  # chance is 0.1
    assert fractions == sorted(fractions) and len(set(fractions)) == len(fractions) and fractions[-1] == 1.0
    assert {"epoch", "loss", "student_loss", "lr", "val_largest", "val_smallest"} <= set(result.history[-1])


def test_resume_after_kill_matches_uninterrupted_run():
    cfg = TrainConfig(epochs=4, lr=0.05, n_random=1, calib_batches=1, val_batches=1, progress_every=1)
    space, net = make_supernet()
    train, val = loaders(96, 64)
    full_ckpt = MemoryCheckpointer()
    fractions: list[float] = []
    full = train_supernet(space=space, supernet=net, train_loader=train, val_loader=val, config=cfg, device=CPU,
                          checkpointer=full_ckpt, meta={"job": "a"}, progress=lambda f, m, d: fractions.append(f))
    assert fractions == sorted(fractions) and len(set(fractions)) == len(fractions) == 4 * 3

    def kill_after_two(fraction, message, metrics):
        if fraction >= 0.5 and "done" in message:
            raise Stop()

    ckpt = MemoryCheckpointer()
    space_b, net_b = make_supernet()
    with pytest.raises(Stop):
        train_supernet(space=space_b, supernet=net_b, train_loader=train, val_loader=val, config=cfg, device=CPU,
                       checkpointer=ckpt, progress=kill_after_two, meta={"job": "a"})
    assert sorted(ckpt.saved) == [1, 2]
    space_c, net_c = make_supernet(seed=123)  # a restarted worker builds a fresh, differently initialised net
    train_c, val_c = loaders(96, 64)
    resumed = train_supernet(space=space_c, supernet=net_c, train_loader=train_c, val_loader=val_c, config=cfg,
                             device=CPU, checkpointer=ckpt, meta={"job": "a"})
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_run == 2
    assert resumed.history == full.history and len(resumed.history) == 4
    a, c = net.state_dict(), net_c.state_dict()
    assert a.keys() == c.keys()
    for k in a:
        assert torch.allclose(a[k].float(), c[k].float(), atol=1e-6, rtol=0), k

    # The checkpoint describes itself: what space, which options, which config, which job.
    state = load_checkpoint(full_ckpt.saved[4])
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "step", "metric", "history", "space",
            "config", "meta", "rng", "kind", "format"} <= set(state)
    assert state["space"] == {"name": "resnet_cls", "options": space.options}
    assert state["epoch"] == 4 and state["step"] == 12 and state["meta"] == {"job": "a"}
    assert state["config"]["epochs"] == 4 and state["metric"] == full.history[-1]["val_largest"]
    rebuilt = get_search_space(state["space"]["name"], **state["space"]["options"]).build_supernet(num_classes=10)
    rebuilt.load_state_dict(state["model"])

    # A finished checkpoint resumes to nothing left to do.
    again = train_supernet(space=space_c, supernet=net_c, train_loader=train_c, val_loader=val_c, config=cfg,
                           device=CPU, checkpointer=full_ckpt)
    assert again.epochs_run == 0 and again.history == full.history and again.final == full.final


def test_resume_refuses_a_checkpoint_of_another_run():
    space, net = make_supernet()
    train, val = loaders(64, 32)
    ckpt = MemoryCheckpointer()
    cfg = TrainConfig(epochs=1, n_random=0, calib_batches=1, val_batches=1)
    train_supernet(space=space, supernet=net, train_loader=train, val_loader=val, config=cfg, device=CPU,
                   checkpointer=ckpt)
    arch = space.smallest()
    with pytest.raises(ValueError, match="checkpoint is a supernet"):
        finetune(space=space, model=extract_copy(net, arch), arch=arch, train_loader=train, val_loader=val,
                 config=cfg, device=CPU, checkpointer=ckpt)
    other = get_search_space("resnet_cls", **{**SPACE_OPTIONS, "stem_width": 16})
    with pytest.raises(ValueError, match="checkpoint is a supernet"):
        train_supernet(space=other, supernet=other.build_supernet(num_classes=10), train_loader=train,
                       val_loader=val, config=cfg, device=CPU, checkpointer=ckpt)
    tuned = MemoryCheckpointer()
    finetune(space=space, model=extract_copy(net, arch), arch=arch, train_loader=train, val_loader=val,
             config=cfg, device=CPU, checkpointer=tuned)
    bigger = space.largest()
    with pytest.raises(ValueError, match="differs from this run in arch"):
        finetune(space=space, model=extract_copy(net, bigger), arch=bigger, train_loader=train, val_loader=val,
                 config=cfg, device=CPU, checkpointer=tuned)


def test_raising_progress_cancels_training():
    space, net = make_supernet()
    train, val = loaders(64, 32)
    calls = []

    def cancel(fraction, message, metrics):
        calls.append(fraction)
        raise Stop("cancelled")

    with pytest.raises(Stop):
        train_supernet(space=space, supernet=net, train_loader=train, val_loader=val, device=CPU, progress=cancel,
                       config=TrainConfig(epochs=3, n_random=0, progress_every=1, calib_batches=1))
    assert len(calls) == 1 and 0 < calls[0] < 1 / 3


def test_evaluate_subnet_leaves_the_supernet_untouched():
    space, net = make_supernet()
    train, val = loaders(64, 64)
    net.set_active(space.smallest())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    arch = space.sample(__import__("random").Random(1))
    metric = evaluate_subnet(space=space, supernet=net, arch=arch, calib_loader=train, val_loader=val, device=CPU,
                             calib_batches=2)
    assert 0.0 <= metric <= 1.0
    after = net.state_dict()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert net.active == space.smallest()


def test_recalibrate_bn_re_estimates_cumulative_statistics():
    space, net = make_supernet()
    train, _ = loaders(64, 32)
    arch = space.sample(__import__("random").Random(2))
    model = extract_copy(net, arch)
    stem_conv, stem_bn = model[0][0], model[0][1]
    momentum_before = stem_bn.momentum
    old_mean = stem_bn.running_mean.clone()
    recalibrate_bn(model=model, loader=train, space=space, arch=arch, device=CPU, batches=2)
    assert not model.training and stem_bn.momentum == momentum_before
    assert not torch.allclose(stem_bn.running_mean, old_mean)
    # Two equal batches averaged cumulatively give the mean over both of them.
    images = torch.cat([b[0] for b, _ in zip(train, range(2), strict=False)])
    images = F.interpolate(images, size=(space.input_size(arch),) * 2, mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = stem_conv(images).mean(dim=(0, 2, 3))
    assert torch.allclose(stem_bn.running_mean, expected, atol=1e-5)
    # The supernet's own statistics were not touched by the recalibration of a copy.
    assert torch.equal(net.stem_bn.running_mean, torch.zeros_like(net.stem_bn.running_mean))


def test_finetune_with_supernet_teacher_and_resume():
    space, net = make_supernet()
    train, val = loaders(96, 64)
    arch = space.smallest()
    cfg = TrainConfig(epochs=2, lr=0.05, val_batches=1)
    ckpt = MemoryCheckpointer()
    model = extract_copy(net, arch)
    metric, history = finetune(space=space, model=model, arch=arch, train_loader=train, val_loader=val, config=cfg,
                               device=CPU, teacher=net, checkpointer=ckpt)
    assert len(history) == 2 and 0 <= metric <= 1 and "distill_loss" in history[0]
    state = load_checkpoint(ckpt.saved[2])
    assert state["kind"] == "finetune" and state["arch"] == space.validate(arch)
    metric2, history2 = finetune(space=space, model=extract_copy(net, arch), arch=arch, train_loader=train,
                                 val_loader=val, config=cfg, device=CPU, teacher=net, checkpointer=ckpt)
    assert history2 == history and metric2 == metric


def test_a_supernet_teacher_is_its_largest_arch_with_its_own_bn_statistics():
    space, net = make_supernet()
    train, _ = loaders(96, 32)
    # Shared statistics as a supernet's training leaves them: a mix that fits no sub-network.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 3)
            m.running_var.uniform_(0.01, 10)
    shared = {k: v.clone() for k, v in net.state_dict().items()}
    teacher = standalone_teacher(space=space, teacher=net, loader=train, device=CPU, batches=3)
    largest = space.largest()
    expected = recalibrate_bn(model=extract_copy(net, largest), loader=train, space=space, arch=largest, device=CPU,
                              batches=3)
    images = F.interpolate(next(iter(train))[0], size=(space.input_size(largest),) * 2, mode="bilinear",
                           align_corners=False)
    with torch.no_grad():
        assert torch.allclose(teacher(images), expected(images), atol=1e-5)
        net.set_active(largest)
        assert not torch.allclose(net.eval()(images), expected(images), atol=1e-2)  # what was distilled before
    assert not teacher.training and all(torch.equal(v, shared[k]) for k, v in net.state_dict().items())
    other = torch.nn.Linear(3, 2)
    assert standalone_teacher(space=space, teacher=other, loader=train, device=CPU) is other


def _ddp_available() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


@pytest.mark.skipif(not _ddp_available(), reason="torch.distributed with gloo is not available")
def test_ddp_gloo_two_ranks_on_cpu():
    from autonn.ddp import train_supernet_ddp
    space, net = make_supernet()
    train = digits(128)
    val = DataLoader(digits(64, offset=128), batch_size=64)
    ckpt = MemoryCheckpointer()
    fractions = []
    cfg = TrainConfig(epochs=2, batch_size=16, n_random=1, calib_batches=1, progress_every=1)
    result = train_supernet_ddp(space=space, supernet=net, train_dataset=train, val_loader=val, config=cfg,
                                world_size=2, backend="gloo", checkpointer=ckpt,
                                progress=lambda f, m, d: fractions.append(f))
    assert len(result.history) == 2 and sorted(ckpt.saved) == [1, 2]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    state = torch.load(io.BytesIO(ckpt.saved[2]), weights_only=True)
    assert state["step"] == 2 * (128 // 2 // 16)  # each rank sees half the data per epoch


def test_zero_init_residual_bn_and_extraction_matches_the_supernet_path():
    space, net = make_supernet()
    blocks = [b for stage in net.stages for b in stage]
    assert all(torch.count_nonzero(b.bn3.bn.weight) == 0 for b in blocks)  # every block starts as its shortcut
    net.eval()
    x = torch.rand(2, 3, 24, 24)
    small = space.smallest()
    deep = {**small, "depths": [3] * len(small["depths"])}
    net.set_active(small)
    shallow_out = net(x)
    net.set_active(deep)
    # Blocks after a stage's first add nothing yet (ReLU of a non-negative input is the input).
    assert torch.allclose(net(x), shallow_out, atol=1e-6)
    # Once the gammas move (as training does), an extracted copy still computes the supernet path.
    torch.manual_seed(1)
    with torch.no_grad():
        for b in blocks:
            b.bn3.bn.weight.normal_()
            b.bn3.bn.running_mean.normal_(std=0.1)
    rng = random.Random(0)
    for arch in [space.largest(), small, deep, space.sample(rng), space.sample(rng)]:
        net.set_active(arch)
        size = space.input_size(arch)
        xs = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        want = net(xs)
        assert want.abs().sum() > 0
        assert torch.allclose(extract_copy(net, arch)(xs), want, atol=1e-5)


@pytest.mark.parametrize("smallest_size", ["min", "random"])
def test_sandwich_trains_the_smallest_at_the_lowest_or_a_drawn_input_size(smallest_size):
    from autonn.train import autocast_setup, sandwich_step

    space, net = make_supernet()
    cfg = TrainConfig(n_random=1, smallest_size=smallest_size)
    activated, set_active = [], net.set_active
    net.set_active = lambda arch: (activated.append(arch), set_active(arch))[1]
    step = sandwich_step(space=space, net=net, forward=net, config=cfg)
    x, y = next(iter(DataLoader(digits(8), batch_size=8)))
    rng, (autocast, scaler) = random.Random(0), autocast_setup(cfg, CPU)
    sizes = []
    for _ in range(8):
        activated.clear()
        step(x, y, rng, autocast, scaler)
        _largest, low, _random, _back = activated  # largest, smallest, one random, back to the largest
        assert {k: v for k, v in low.items() if k != "resolution"} == \
            {k: v for k, v in space.smallest().items() if k != "resolution"}
        sizes.append(space.input_size(low))
    if smallest_size == "min":
        assert set(sizes) == {min(space.input_sizes())}
    else:
        assert set(sizes) == set(space.input_sizes())  # 8 draws from 3 sizes, seeded


def test_an_unknown_smallest_size_rule_is_refused():
    from autonn.train import sandwich_step

    space, net = make_supernet()
    with pytest.raises(ValueError, match="smallest_size"):
        sandwich_step(space=space, net=net, forward=net, config=TrainConfig(smallest_size="max"))
