"""Multi-process (DistributedDataParallel) supernet training.

The calling process is rank 0: it keeps the caller's supernet, checkpointer, progress callback
and validation loader, none of which has to be picklable. Ranks 1..N-1 are spawned processes
that receive the supernet as `torch.save` bytes (never shared memory, so their in-place updates
cannot touch rank 0's tensors) and the training dataset. DDP broadcasts rank 0's weights when it
wraps the model, and rank 0 broadcasts the resume checkpoint so every rank restores the same
optimizer state. Subnets skip blocks, hence find_unused_parameters=True; every rank draws the
same subnets because subnet draws are a function of (seed, epoch).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from autonn.spaces.base import SearchSpace, Supernet
from autonn.train import Checkpointer, ProgressFn, TrainConfig, TrainResult, run_job, supernet_job


def train_supernet_ddp(*, space: SearchSpace, supernet: Supernet, train_dataset: Dataset, val_loader: Iterable,
                       config: TrainConfig, world_size: int | None = None, backend: str | None = None,
                       checkpointer: Checkpointer | None = None, progress: ProgressFn | None = None,
                       meta: dict | None = None, num_workers: int = 0, timeout_s: float = 1800,
                       collate_fn: Callable | None = None) -> TrainResult:
    """Train on `world_size` processes (default: one per CUDA device; "gloo" on CPU). Each rank
    loads `config.batch_size` images per step from its DistributedSampler shard."""
    cuda = torch.cuda.device_count()
    world_size = world_size or max(1, cuda)
    backend = backend or ("nccl" if cuda >= world_size > 1 else "gloo")
    if backend == "nccl" and cuda < world_size:
        raise ValueError(f"nccl needs one CUDA device per rank: {world_size} ranks, {cuda} devices")
    rendezvous = tempfile.mkdtemp(prefix="tango-ddp-")
    init_method = f"file://{os.path.join(rendezvous, 'store')}"
    buf = io.BytesIO()
    torch.save({"space": space, "supernet": supernet}, buf)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, daemon=True,
                         args=(rank, world_size, backend, init_method, timeout_s, buf.getvalue(), train_dataset,
                               config, num_workers, torch.get_num_threads(), collate_fn))
             for rank in range(1, world_size)]
    for p in procs:
        p.start()
    try:
        dist.init_process_group(backend, init_method=init_method, rank=0, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
        try:
            result = _train_rank(0, world_size, backend, space, supernet, train_dataset, val_loader, config,
                                 num_workers, checkpointer, progress, meta, collate_fn)
        finally:
            dist.destroy_process_group()
        for p in procs:
            p.join()
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"DDP worker processes exited with {failed}")
        return result
    finally:
        for p in procs:  # a cancelled or failed rank 0 must not leave ranks blocked in collectives
            if p.is_alive():
                p.terminate()
                p.join(10)
        shutil.rmtree(rendezvous, ignore_errors=True)


def _worker(rank: int, world_size: int, backend: str, init_method: str, timeout_s: float, blob: bytes,
            train_dataset: Dataset, config: TrainConfig, num_workers: int, threads: int,
            collate_fn: Callable | None) -> None:
    torch.set_num_threads(threads)
    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)  # our own bytes, this run
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))
    try:
        _train_rank(rank, world_size, backend, state["space"], state["supernet"], train_dataset, None, config,
                    num_workers, None, None, None, collate_fn)
    finally:
        dist.destroy_process_group()


def _train_rank(rank: int, world_size: int, backend: str, space: SearchSpace, supernet: Supernet,
                train_dataset: Dataset, val_loader: Iterable | None, config: TrainConfig, num_workers: int,
                checkpointer: Checkpointer | None, progress: ProgressFn | None, meta: dict | None,
                collate_fn: Callable | None = None) -> TrainResult:
    device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    supernet.to(device)
    sampler = DistributedSampler(train_dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed)
    loader = DataLoader(train_dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                        num_workers=num_workers, pin_memory=device.type == "cuda", collate_fn=collate_fn)
    ddp = DistributedDataParallel(supernet, device_ids=[device.index] if device.type == "cuda" else None,
                                  find_unused_parameters=True)
    job = supernet_job(space=space, supernet=supernet, forward=ddp, train_loader=loader,
                       val_loader=val_loader if val_loader is not None else [], config=config, device=device,
                       checkpointer=checkpointer, progress=progress, meta=meta, is_main=rank == 0,
                       share=_broadcast)
    return run_job(job)


def _broadcast(payload: Any) -> Any:
    box = [payload]
    dist.broadcast_object_list(box, src=0)
    return box[0]
