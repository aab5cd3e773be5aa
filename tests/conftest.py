"""Shared test fixtures: tiny configs, the read-only ../shared folder (skipped cleanly when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DAGAN_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference" / "dagan_tiny"
DATA = SHARED / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes tens of seconds (deselect with -m 'not slow')")


@pytest.fixture(autouse=True)
def _restore_dagan_log_level():
    """CLIs run in-process set the 'dagan' logger's level (--quiet: errors only); later tests that check
    warnings with caplog must not inherit it."""
    import logging

    logger = logging.getLogger("dagan")
    level = logger.level
    yield
    logger.setLevel(level)


def requires_shared(path: Path = SHARED):
    """Skip (not fail) when ../shared is absent: a user's fresh clone does not have it; CI does."""
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present (shared test data)")


@pytest.fixture
def shared_data() -> Path:
    if not DATA.exists():
        pytest.skip(f"{DATA} not present (shared test data)")
    return DATA


@pytest.fixture
def reference_dir() -> Path:
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not present (shared reference)")
    return REFERENCE


@pytest.fixture
def tiny_config():
    from dagan.config import load_config

    return load_config(REPO / "configs" / "dagan-tiny.yaml")


@pytest.fixture
def tiny_model(tiny_config):
    from dagan import DaGAN

    torch.manual_seed(0)
    return DaGAN(tiny_config.model).eval()


@pytest.fixture
def train_config(tiny_config):
    """The tiny config set up for few-step trainer tests (light depth net, frequent logs and saves)."""
    c = tiny_config
    c.model.depth.num_layers = 10
    c.train.batch_size = 2
    c.train.log_every = 1
    c.train.image_every = 1000
    c.train.save_every = 2
    c.train.train_depth = False
    return c


def kill_when_marker(proc, marker: Path, timeout: float = 240.0) -> None:
    """SIGKILL ``proc`` as soon as it creates ``marker`` (e.g. in the middle of a write); fail if it exits
    before or never gets there."""
    import signal
    import time

    try:
        deadline = time.time() + timeout
        while not marker.exists():
            if proc.poll() is not None:
                err = proc.stderr.read()[-2000:] if proc.stderr else ""
                pytest.fail(f"process exited before reaching {marker.name}: {err}")
            assert time.time() < deadline, f"process never reached {marker.name}"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def one_thread():
    """One intra-op thread for loops of many small ops (no oversubscription on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ShiftedPairs(torch.utils.data.Dataset):
    """Smooth random images and a shifted copy; ``ds[n]`` seeded by ``n`` (the trainer's convention).
    Sample numbers from ``nan_from`` on hold NaNs."""

    def __init__(self, size=64, length=8, nan_from=None):
        self.size, self.length, self.nan_from = size, length, nan_from

    def __len__(self):
        return self.length

    def __getitem__(self, n):
        g = torch.Generator().manual_seed(int(n))
        base = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(self.size, self.size), mode="bilinear",
                             align_corners=False)[0]
        driving = torch.roll(base, shifts=(int(n) % 5 - 2, 2), dims=(1, 2))
        if self.nan_from is not None and n >= self.nan_from:
            driving = driving * float("nan")
        return {"source": base, "driving": driving, "skipped": torch.tensor(0)}
