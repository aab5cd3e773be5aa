"""Training faults: a run killed while saving, a full disk, and unreadable frames never cost the last good
checkpoint, and resuming after a kill reproduces the uninterrupted run exactly."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dagan.checkpoints import load_file
from dagan.config import save_config
from dagan.errors import OutputError
from dagan.training.datasets import VideoFramesDataset
from dagan.training.trainer import train

from conftest import ShiftedPairs, kill_when_marker

TESTS = Path(__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("one_thread")  # exact resume needs the killed run's thread count


@pytest.fixture
def cfg(train_config):
    return train_config


def _weights(path):
    return load_file(path)["state_dict"]


@pytest.mark.slow
def test_sigkill_while_saving_then_exact_resume(cfg, tmp_path):
    """Kill the trainer in the middle of writing its step-4 checkpoint: the step-2 checkpoint survives and
    resuming from it reaches the same weights as a run that was never interrupted."""
    save_config(cfg, tmp_path / "cfg.yaml")
    run = tmp_path / "killed"
    marker = tmp_path / "writing"
    script = textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {str(TESTS)!r})
        from conftest import ShiftedPairs
        from dagan.config import load_config
        from dagan.training import trainer
        torch.set_num_threads(1)
        real_save, calls = torch.save, []
        def save(obj, fh, *a, **k):
            if isinstance(obj, dict) and obj.get("step") == 4:
                fh.write(b"half a checkpoint")
                fh.flush()
                open({str(marker)!r}, "w").close()
                time.sleep(120)
            return real_save(obj, fh, *a, **k)
        torch.save = save
        trainer.train(load_config({str(tmp_path / "cfg.yaml")!r}), ShiftedPairs(), {str(run)!r}, device="cpu",
                      max_steps=6, progress=False)
    """)
    kill_when_marker(subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True), marker)
    survivor = load_file(run / "checkpoint.pt")
    assert survivor["step"] == 2
    resumed = train(cfg, ShiftedPairs(), run, device="cpu", max_steps=4, progress=False,
                    resume=run / "checkpoint.pt")
    assert resumed["step"] == 4
    straight = train(cfg, ShiftedPairs(), tmp_path / "straight", device="cpu", max_steps=4, progress=False)
    a, b = _weights(straight["checkpoint"]), _weights(resumed["checkpoint"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_disk_full_on_save_keeps_previous_checkpoint(cfg, tmp_path, monkeypatch):
    real_save = torch.save

    def full_disk(obj, fh, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OutputError, match="no space left on device; the previous file is intact"):
        train(cfg, ShiftedPairs(), tmp_path, device="cpu", max_steps=6, progress=False)
    monkeypatch.undo()
    assert load_file(tmp_path / "checkpoint.pt")["step"] == 2
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_unreadable_frames_finish_the_run_and_are_counted(cfg, tmp_path):
    rng = np.random.default_rng(0)
    for video in ("a", "b"):
        folder = tmp_path / "data" / "train" / video
        folder.mkdir(parents=True)
        for i in range(6):
            Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(folder / f"{i:07d}.png")
    for video in ("a", "b"):  # half the frames of each clip are broken: truncated header, empty file, text
        (tmp_path / "data" / "train" / video / "0000001.png").write_bytes(b"\x89PNG broken")
        (tmp_path / "data" / "train" / video / "0000003.png").write_bytes(b"")
        (tmp_path / "data" / "train" / video / "0000005.png").write_text("not an image")
    data = VideoFramesDataset(tmp_path / "data", "train", (64, 64), num_repeats=4)
    result = train(cfg, data, tmp_path / "run", device="cpu", max_steps=4, progress=False)
    assert result["step"] == 4
    assert result["skipped_samples"] > 0
    assert load_file(result["checkpoint"])["step"] == 4
