"""DDP: a 2-process gloo run on CPU (torchrun-style environment variables) trains in sync, writes one
checkpoint from rank 0 without ``module.`` prefixes, and follows the single-process loss curve."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from conftest import REPO, ShiftedPairs


def _config(batch):
    from dagan.config import load_config

    cfg = load_config(REPO / "configs" / "dagan-tiny.yaml")
    cfg.model.depth.num_layers = 10
    cfg.train.batch_size = batch
    cfg.train.log_every = 1
    cfg.train.save_every = 100
    cfg.train.image_every = 100
    return cfg


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from dagan.training.trainer import train

    result = train(_config(2), ShiftedPairs(length=16), out, device="cpu", max_steps=3, progress=False)
    params = torch.cat([p.detach().flatten() for p in result["model"].parameters()])
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump({"sum": float(params.double().sum()), "abs": float(params.double().abs().sum()),
                   "step": result["step"]}, fh)
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path):
    from dagan import DaGAN
    from dagan.checkpoints import load_file
    from dagan.training.trainer import train

    out = str(tmp_path / "ddp")
    os.makedirs(out)
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    ranks = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(2)]
    assert ranks[0] == ranks[1]  # gradients were averaged: both replicas hold the same weights
    ckpt = load_file(os.path.join(out, "checkpoint.pt"))
    assert ckpt["step"] == 3 and not any(k.startswith("module.") for k in ckpt["state_dict"])
    DaGAN.from_pretrained(os.path.join(out, "checkpoint.pt"))
    ddp_curve = [json.loads(x)["generator_total"] for x in open(os.path.join(out, "metrics.jsonl"))]
    assert len(ddp_curve) == 3  # rank 0 alone logs

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # one process, batch 4 = the same 4 samples per step as 2 ranks x 2
        single = train(_config(4), ShiftedPairs(length=16), tmp_path / "single", device="cpu", max_steps=3, progress=False)
    finally:
        torch.set_num_threads(before)
    single_curve = [json.loads(x)["generator_total"] for x in open(tmp_path / "single" / "metrics.jsonl")]
    assert single["step"] == 3
    for a, b in zip(ddp_curve, single_curve):  # per-rank batch norm and warps differ: close, not equal
        assert abs(a - b) / b < 0.25, (ddp_curve, single_curve)
