"""Atomic writes: a killed or failing save never damages the previous file."""
import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dagan.errors import OutputError
from dagan.utils import atomic_torch_save, temporary_output

from conftest import kill_when_marker


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"step": 1, "w": torch.ones(3)}, path)
    marker = tmp_path / "writing"
    script = textwrap.dedent(f"""
        import time, torch
        from dagan import utils
        real_save = torch.save
        def slow_save(obj, fh):
            fh.write(b"x" * 1000)   # part of the new file is on disk...
            fh.flush()
            open({str(marker)!r}, "w").close()
            time.sleep(60)           # ...when the process is killed
        torch.save = slow_save
        utils.atomic_torch_save({{"step": 2}}, {str(path)!r})
    """)
    kill_when_marker(subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True), marker,
                     timeout=60)
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))


def test_disk_full_keeps_previous_file_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"step": 1}, path)

    def full_disk(obj, fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OutputError, match="no space left on device; the previous file is intact"):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"], "the temp file must be removed"


def test_temporary_output_renames_only_on_success(tmp_path):
    out = tmp_path / "result.mp4"
    with temporary_output(out) as tmp:
        open(tmp, "wb").write(b"done")
        assert not out.exists()
    assert out.read_bytes() == b"done"
    with pytest.raises(RuntimeError):
        with temporary_output(tmp_path / "other.mp4") as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("encoder crashed")
    assert sorted(os.listdir(tmp_path)) == ["result.mp4"]


def test_outputs_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_torch_save({"a": 1}, tmp_path / "c.pt")
        with temporary_output(tmp_path / "v.mp4") as tmp:
            open(tmp, "wb").write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "v.mp4").stat().st_mode & 0o777 == 0o644
