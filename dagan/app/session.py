"""What one request needs besides the page: the models on offer, upload checks, the app's temporary folder, a
file animation through :func:`dagan.inference.pipeline.run`, and a webcam session over
:func:`dagan.inference.pipeline.stream_animator`."""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..inference import pipeline
from ..inference.loading import DEFAULT_CHECKPOINT
from .form import FormOption, options_from_form

#: a finished result stays downloadable this long; older run folders are removed by the next request
DEFAULT_KEEP_MINUTES = 60
#: label of the model entry that means "what demo.py uses without --checkpoint"
SHIPPED_MODEL = "shipped (checkpoints/dagan-small)"
USER_MODELS_ENV = "DAGAN_MODELS"
DEFAULT_USER_MODELS = Path.home() / ".cache" / "dagan" / "models"


# ------------------------------------------------------------------------------------------- models
def find_models(folders: Sequence[Path]) -> Dict[str, Optional[str]]:
    """Models the page offers: label -> ``--checkpoint`` path (None: the demo's default model).

    A model is a folder with a ``config.yaml`` (from ``save_pretrained``) or a single ``.pt`` file of ours,
    directly inside one of ``folders`` (missing folders are skipped)."""
    models: Dict[str, Optional[str]] = {SHIPPED_MODEL: None}
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            is_model = (entry.is_dir() and (entry / "config.yaml").is_file()) or \
                (entry.is_file() and entry.suffix == ".pt")
            if not is_model or entry.resolve() == DEFAULT_CHECKPOINT.resolve():
                continue
            label = f"{folder.name}/{entry.name}"
            while label in models:
                label = f"{folder}/{entry.name}"
            models[label] = str(entry)
    return models


def model_folders(user_folder: Optional[str] = None) -> List[Path]:
    """``checkpoints/`` of the repository, then the user folder (``--models-dir``, ``$DAGAN_MODELS`` or
    ``~/.cache/dagan/models``)."""
    user = user_folder or os.environ.get(USER_MODELS_ENV) or str(DEFAULT_USER_MODELS)
    return [DEFAULT_CHECKPOINT.parent, Path(user)]


# ------------------------------------------------------------------------------------------- inputs
def check_upload(path: Optional[str], kind: str, max_bytes: int) -> Optional[str]:
    """Validate an uploaded file by size and content; returns ``path`` (None stays None = built-in input).

    ``kind``: ``"image"`` (must decode with Pillow) or ``"video"`` (must hold decodable video frames).
    Raises :class:`InputError` with a one-line message that names the file the user picked."""
    if path is None:
        return None
    name = Path(path).name
    size = os.path.getsize(path)
    if size > max_bytes:
        raise InputError(f"{name} is {size / 2 ** 20:.1f} MB; the limit is {max_bytes / 2 ** 20:.0f} MB")
    if kind == "image":
        from ..io.images import load_image

        try:
            load_image(path)
        except InputError:
            raise InputError(f"{name} is not an image this app can read (PNG, JPEG, WebP, BMP, TIFF)") from None
        return path
    from ..io.video import VideoReader

    try:
        reader = VideoReader(path)
        reader.check_integrity()
        reader.close()
    except InputError as exc:
        if "cannot read video" in str(exc):
            raise InputError(f"{name} is not a video (ffmpeg finds no video stream in it)") from None
        raise InputError(f"{name} cannot be used: {str(exc).replace(path, name)}") from None
    return path


class WorkArea:
    """The app's one temporary folder: ``uploads/`` (Gradio's cache) and one ``runs/<id>/`` per request.

    :meth:`new_run` removes run folders older than ``keep_seconds``; :meth:`close` removes everything."""

    def __init__(self, keep_seconds: float = DEFAULT_KEEP_MINUTES * 60.0, parent: Optional[str] = None):
        self.root = Path(tempfile.mkdtemp(prefix="dagan-app-", dir=parent))
        self.uploads = self.root / "uploads"
        self.runs = self.root / "runs"
        self.uploads.mkdir()
        self.runs.mkdir()
        self.keep_seconds = float(keep_seconds)
        self._lock = threading.Lock()

    def new_run(self) -> Path:
        with self._lock:
            cutoff = time.time() - self.keep_seconds
            for old in self.runs.iterdir():
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            folder = self.runs / uuid.uuid4().hex
            folder.mkdir()
            return folder

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def animate(source: Optional[str], driving: Optional[str], checkpoint: Optional[str], values: Mapping[str, Any],
            run_dir: Path, on_frame: Optional[Callable[[int, Optional[int]], None]] = None,
            detector_factory=None, options: Optional[Sequence[FormOption]] = None) -> Tuple[str, str]:
    """Animate through the demo's own :func:`~dagan.inference.pipeline.run`; returns (result mp4, depth mp4).

    ``source``/``driving``: file paths or None for the built-in astronaut / head motion; ``checkpoint``:
    our model folder or file, None for the demo's default model; ``values``: form values by option ``dest``.
    Both videos are written in ``run_dir`` (under a temporary name, renamed when complete)."""
    result, depth = run_dir / "result.mp4", run_dir / "depth.mp4"
    settings = options_from_form(values, options, source_image=source, driving_video=driving, checkpoint=checkpoint,
                                 result_video=str(result), save_depth=str(depth), quiet=True)
    pipeline.run(settings, detector_factory, on_frame=on_frame)
    return str(result), str(depth)


class LiveSession:
    """One browser's webcam animation: its own :class:`~dagan.Animator` from
    :func:`dagan.inference.pipeline.stream_animator` (the ``demo.py --stream`` set-up), used under a lock.

    ``key`` identifies the settings it was built for (a new portrait, model or option builds a new session);
    the first frame after start or :meth:`reanchor` anchors relative motion. ``prepare``: what each webcam
    frame goes through first (from :func:`~dagan.inference.pipeline.stream_animator`: the face crop with "Crop the
    face")."""

    def __init__(self, key: Any, animator, description: str,
                 prepare: Optional[Callable[[np.ndarray], np.ndarray]] = None):
        self.key, self.animator, self.description = key, animator, description
        self.prepare = prepare
        self.frames = 0
        self.busy = 0.0  # seconds spent animating
        self.started: Optional[float] = None
        self._lock = threading.Lock()

    @classmethod
    def start(cls, source: Optional[str], checkpoint: Optional[str], values: Mapping[str, Any],
              options: Optional[Sequence[FormOption]] = None, detector_factory=None, key: Any = None) -> "LiveSession":
        settings = options_from_form(values, options, source_image=source, checkpoint=checkpoint)
        return cls(key, *pipeline.stream_animator(settings, detector_factory))

    def animate(self, frame: np.ndarray) -> np.ndarray:
        """``frame``: ``(H, W, 3)`` uint8 RGB from the webcam -> the animated ``(S, S, 3)`` uint8 frame."""
        with self._lock:
            began = time.perf_counter()
            output = self.animator(frame if self.prepare is None else self.prepare(frame))
            self.frames += 1
            self.busy += time.perf_counter() - began
            if self.started is None:
                self.started = began
            return output

    def reanchor(self) -> None:
        with self._lock:
            self.animator.reset()

    def status(self) -> str:
        seconds = time.perf_counter() - self.started if self.started is not None else 0.0
        rate = (self.frames - 1) / seconds if self.frames > 1 and seconds > 0 else 0.0
        per_frame = 1000.0 * self.busy / max(1, self.frames)
        return (f"Live: {self.frames} frames animated, {rate:.1f} frames/s, {per_frame:.0f} ms per frame in the "
                f"model ({self.description}).")
