"""deliver_subnet: what the finetune job and the benchmarks hand back for an arch."""

from __future__ import annotations

import random
from types import SimpleNamespace

import torch

from autonn.delivery import deliver_subnet
from autonn.train import TrainConfig, evaluate_subnet, finetune
from tests.autonn.test_train import CPU, loaders, make_supernet


def _setup():
    space, net = make_supernet()
    train, val = loaders(96, 64)
    # One short supernet epoch, so the subnet starts somewhere a bad fine-tune can spoil.
    finetune(space=space, model=net.extract(space.largest()), arch=space.largest(), train_loader=train,
             val_loader=val, config=TrainConfig(epochs=1, lr=0.05, val_batches=1), device=CPU)
    return space, net, SimpleNamespace(train=train, calib=train, val=val)


def test_no_epochs_gives_the_supernet_subnet_as_evaluated():
    space, net, ls = _setup()
    arch = space.sample(random.Random(4))
    got = deliver_subnet(space=space, supernet=net, arch=arch, loaders=ls, config=None, device=CPU)
    expected = evaluate_subnet(space=space, supernet=net, arch=arch, calib_loader=ls.calib, val_loader=ls.val,
                               device=CPU)
    assert got.val == got.val_before == expected and not got.kept_finetune and not got.model.training


def test_a_fine_tune_that_hurts_validation_is_undone():
    space, net, ls = _setup()
    arch = space.smallest()
    untouched = deliver_subnet(space=space, supernet=net, arch=arch, loaders=ls, config=None, device=CPU)
    # Fine-tuning on labels shifted by one teaches the wrong digits: validation must get worse,
    # and the model handed back must be the untouched one.
    wrong = [(x, (y + 1) % 10) for x, y in ls.train]
    config = TrainConfig(epochs=3, lr=0.05, val_batches=1)
    got = deliver_subnet(space=space, supernet=net, arch=arch, loaders=SimpleNamespace(**{**vars(ls), "train": wrong}),
                         config=config, device=CPU, distill=False)
    assert len(got.history) == 3 and got.history[-1]["val"] < got.val_before
    assert not got.kept_finetune and got.val == got.val_before == untouched.val_before
    for (k, a), b in zip(untouched.model.state_dict().items(), got.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
