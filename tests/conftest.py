"""Shared test fixtures: tiny configs, the read-only ../shared folder (skipped cleanly when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DAGAN_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference" / "dagan_tiny"
DATA = SHARED / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
def one_thread():
    """One intra-op thread for loops of many small ops (no oversubscription on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
