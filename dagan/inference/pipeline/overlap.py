"""Overlapped video pipelines and a realtime streaming mode.

* :class:`BackgroundWriter` composes and encodes in a writer thread through a bounded queue, so inference and
  encoding overlap and memory stays flat however long the video is. Decoding needs no thread of its own:
  ffmpeg decodes in its own process, and the frames are resized in the calling thread (a reader thread
  that resized with torch cost the 2-core demo a quarter of its frames/s: 23 vs 30 frames/s, measured).
* :func:`stream` is the realtime mode for cameras or any frame iterator: each frame carries its arrival
  time, only the newest pending frame is kept (older ones are dropped when inference falls behind), and a
  frame that has already waited longer than the latency budget is dropped instead of animated. It yields a
  :class:`StreamFrame` per animated frame and fills :class:`StreamStats` (p50/p95 latency, frames/s, drops).
* cameras (``0`` / ``/dev/videoN``) are read by :func:`dagan.io.video.open_camera`; ``demo.py --stream``
  (:func:`dagan.inference.pipeline.run_stream`) is built on :func:`stream`.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from ...errors import InputError

logger = logging.getLogger("dagan")
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


# ------------------------------------------------------------------------------------- overlap helpers
def _put(buffer: "queue.Queue[Any]", item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer stops first; True when it was put."""
    while not stop.is_set():
        try:
            buffer.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class BackgroundWriter:
    """Call ``write(item)`` in a writer thread; :meth:`put` blocks when ``depth`` items are pending.

    Use as a context manager: leaving it waits for the queue to drain and re-raises the first error of
    the writer thread (an error also surfaces at the next :meth:`put`).
    """

    def __init__(self, write: Callable[[Any], None], depth: int = 4):
        self._write = write
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, depth))
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="dagan-writer", daemon=True)
        self.written = 0

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is None:
                try:
                    self._write(item)
                    self.written += 1
                except BaseException as exc:  # kept and re-raised in the caller's thread
                    self._error = exc

    def __enter__(self) -> "BackgroundWriter":
        self._thread.start()
        return self

    def put(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None and exc is None:
            raise self._error


# ------------------------------------------------------------------------------------------ streaming
@dataclass
class StreamFrame:
    index: int  # position of the driving frame in the input
    output: Any  # what the animator returned
    latency: float  # seconds from the frame's arrival to its result


@dataclass
class StreamStats:
    """Per-frame latencies (arrival -> result) and drop counts of a :func:`stream` run."""

    latencies: List[float] = field(default_factory=list)
    arrived: int = 0
    dropped_stale: int = 0  # replaced by a newer frame before inference could take it
    dropped_late: int = 0  # waited longer than the latency budget
    wall: float = 0.0

    @property
    def animated(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict:
        lat = np.asarray(self.latencies) * 1000 if self.latencies else np.zeros(1)
        return {"frames_in": self.arrived, "frames_out": self.animated, "dropped_stale": self.dropped_stale,
                "dropped_late": self.dropped_late, "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
                "latency_p95_ms": round(float(np.percentile(lat, 95)), 1),
                "latency_max_ms": round(float(lat.max()), 1),
                "frames_per_s": round(self.animated / self.wall, 2) if self.wall > 0 else 0.0}


class _Latest:
    """A one-slot mailbox: a new frame replaces an unread one (which counts as dropped)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Optional[Tuple[int, float, Any]] = None
        self._done = False
        self._error: Optional[BaseException] = None
        self.replaced = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.replaced += 1
            self._item = item
            self._cond.notify()

    def finish(self, error: Optional[BaseException] = None) -> None:
        with self._cond:
            self._done, self._error = True, error
            self._cond.notify()

    def get(self):
        with self._cond:
            while self._item is None and not self._done:
                self._cond.wait()
            if self._item is not None:
                item, self._item = self._item, None
                return item
            if self._error is not None:
                raise self._error
            return None


def stream(animate: Callable[[Any], Any], frames: Iterable[Any], fps: Optional[float] = None,
           budget_ms: Optional[float] = None, drop_stale: Optional[bool] = None,
           stats: Optional[StreamStats] = None, clock: Callable[[], float] = time.perf_counter
           ) -> Iterator[StreamFrame]:
    """Animate a live stream of frames, dropping frames when inference cannot keep up.

    Args:
        animate: per-frame function, e.g. an :class:`~dagan.Animator` (frame -> output frame).
        frames: any iterable of frames (a camera, :class:`~dagan.io.video.VideoReader`, a list).
        fps: pace the input like a camera at this rate (a file played in real time); ``None`` takes frames
            as fast as the iterable gives them (a camera paces itself).
        budget_ms: drop a frame instead of animating it once it has waited longer than this.
        drop_stale: keep only the newest pending frame (default: on when ``fps`` is given, else off,
            i.e. every frame is animated in order, which measures pure throughput and latency).
        stats: filled with latencies and drop counts (also returned through the generator's life).

    Yields :class:`StreamFrame` for every animated frame, in order.
    """
    stats = stats if stats is not None else StreamStats()
    if fps is not None and fps <= 0:
        raise InputError(f"stream fps must be positive, got {fps}")
    if budget_ms is not None and budget_ms <= 0:
        raise InputError(f"latency budget must be positive, got {budget_ms} ms")
    drop_stale = fps is not None if drop_stale is None else drop_stale
    mailbox: Any = _Latest() if drop_stale else queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        start = clock()
        try:
            for index, frame in enumerate(frames):
                if stop.is_set():
                    break
                if fps is not None:  # release frame i at its camera time
                    delay = start + index / fps - clock()
                    if delay > 0:
                        time.sleep(delay)
                stats.arrived += 1
                item = (index, clock(), frame)
                if drop_stale:
                    mailbox.put(item)
                else:
                    while not stop.is_set():
                        try:
                            mailbox.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
        except BaseException as exc:
            _finish(exc)
            return
        _finish(None)

    def _finish(error: Optional[BaseException]) -> None:
        if drop_stale:
            mailbox.finish(error)
        else:
            _put(mailbox, _Failure(error) if error is not None else _DONE, stop)

    def take():
        if drop_stale:
            return mailbox.get()
        item = mailbox.get()
        if item is _DONE:
            return None
        if isinstance(item, _Failure):
            raise item.exc
        return item

    thread = threading.Thread(target=produce, name="dagan-stream-reader", daemon=True)
    begin = clock()
    thread.start()
    try:
        while True:
            ready = clock()
            item = take()
            if item is None:
                break
            index, arrived, frame = item
            if not drop_stale and fps is None:
                # an unpaced file: frames queue up only because the reader runs ahead; latency counts from
                # when inference could take the frame
                arrived = max(arrived, ready)
            if budget_ms is not None and (clock() - arrived) * 1000 > budget_ms:
                stats.dropped_late += 1
                continue
            output = animate(frame)
            latency = clock() - arrived
            stats.latencies.append(latency)
            stats.wall = clock() - begin
            yield StreamFrame(index, output, latency)
    finally:
        stop.set()
        if drop_stale:
            stats.dropped_stale = mailbox.replaced
        stats.wall = clock() - begin
        thread.join(timeout=5)
