"""Where the faces of a raw video are: face tracks, each one person in one shot, in full-resolution pixels.

:func:`find_tracks` decodes a small copy of the video (ffmpeg scales it, so full-size frames never reach
Python), detects faces on every ``detect_every``-th frame and tracks them in between
(:class:`~dagan.faces.LandmarkTracker`). A track ends where

* the face is lost for more than ``max_gap`` frames,
* the shot changes (the difference of two consecutive frames jumps, see :class:`SceneCuts`),
* the face box leaves the crop window the track started with (``enlarge`` x the first face, centred on it),
* the identity embedding no longer agrees with the track's (checked every ``identity_every`` frames and at the
  track's end; face crops kept every ``detect_every`` frames since the last check are bisected to find the
  switch, the track ends at the last one that agrees and a new one starts, so a clip never switches people).

:func:`read_voxceleb_tracks` reads VoxCeleb's own face tracks instead (``FRAME X Y W H`` lines).

Over ~450 lines on purpose: the tracker's cuts (face lost, scene cut, crop window left, identity changed) are
one state machine over a video's frames.
"""
from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, MissingWeightsError
from ..faces import (DlibFaceBackend, Face, FaceDetector, LandmarkTracker,
                               load_face_backend)
from ..io.video import VideoReader

#: VoxCeleb's face-track files count frames at 25 fps, whatever the video's own rate
VOXCELEB_FPS = 25.0


@dataclass
class TrackOptions:
    """How faces are found and followed (see the module docstring)."""

    detect_every: int = 10
    detect_size: int = 480  # shorter side of the decoded copy that faces are detected on (never upscaled)
    enlarge: float = 1.8  # crop side / face size; also the size of the window a face may move in
    min_frames: int = 64
    max_gap: int = 2
    # an embedding costs ~0.15-0.2 s on one core: check every 10 s at 25 fps, and at the end of a track; a switch
    # in between is found by bisecting the samples kept since the last check
    identity_every: int = 250
    # tighter than dlib's 0.6 between photos: within one shot a face varies less (shared clips: <= 0.40 from the
    # first frame), and two men with glasses in the shared clips are 0.51-0.58 apart
    identity_distance: float = 0.45
    scene_threshold: float = 30.0  # mean absolute difference (0-255) of consecutive frames that is a cut


@dataclass
class VideoInfo:
    """A raw video's frame rate, full-resolution ``size`` ``(W, H)``, frame count and audio."""

    fps: float
    size: Tuple[int, int]
    frames: int = 0
    has_audio: bool = False


@dataclass
class FaceTrack:
    """Frames ``start .. start + len(boxes) - 1`` of one person. ``boxes``: ``(T, 4)`` float ``(x0, y0, x1, y1)``
    in full-resolution pixels, NaN rows where the face was briefly lost; ``embedding``: ``(128,)`` or None;
    ``person``: the person id, when the track file names one; ``frame_numbers``: ``(T,)`` the frame of each box
    when they are not consecutive (a VoxCeleb track file, counted at 25 fps)."""

    start: int
    boxes: np.ndarray
    embedding: Optional[np.ndarray] = None
    person: Optional[str] = None
    frame_numbers: Optional[np.ndarray] = None

    @property
    def end(self) -> int:
        """One past the last frame."""
        return self.start + len(self.boxes)

    def __len__(self) -> int:
        return len(self.boxes)


class SceneCuts:
    """Shot boundaries from frame differences: frame ``t`` starts a new shot when the mean absolute green-level
    difference to frame ``t - 1`` exceeds ``threshold`` (0-255) and ``ratio`` x the median of the last
    ``history`` differences (so steady fast motion does not count as a cut)."""

    def __init__(self, threshold: float = 30.0, ratio: float = 3.0, history: int = 8):
        self.threshold, self.ratio, self.history = float(threshold), float(ratio), int(history)
        self.previous: Optional[np.ndarray] = None
        self.recent: List[float] = []

    def __call__(self, frame: np.ndarray) -> bool:
        """``frame``: ``(H, W, 3)`` uint8. True when it starts a new shot."""
        grey = frame[::4, ::4, 1].astype(np.float32)  # green: close to the luma, a third of the work
        previous, self.previous = self.previous, grey
        if previous is None:
            return False
        diff = float(np.abs(grey - previous).mean())
        typical = float(np.median(self.recent)) if self.recent else 0.0
        self.recent = (self.recent + [diff])[-self.history:]
        if diff > self.threshold and diff > self.ratio * typical:
            self.recent = []
            return True
        return False


class _FocusedDetector:
    """The face backend as :class:`LandmarkTracker` sees it: identity embeddings on demand, and, while a face is
    followed, detection only in a square of ``FOCUS`` x its size around it, shrunk to ``FOCUS_SIZE`` pixels (the
    face is then ~100 px, plenty for the detector; a fraction of the whole frame's cost, and other faces do not
    matter to the track)."""

    FOCUS = 2.5
    FOCUS_SIZE = 256

    def __init__(self, backend: FaceDetector):
        self.backend = backend
        self.embeds = "embedding" in inspect.signature(backend.detect).parameters
        self.want_embedding = False
        self.focus: Optional[np.ndarray] = None  # (x0, y0, x1, y1) of the followed face, or None
        if hasattr(backend, "fit_landmarks"):
            self.fit_landmarks = backend.fit_landmarks

    @classmethod
    def square(cls, box: np.ndarray, shape: Tuple[int, ...]) -> Tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the part of an image of ``shape`` ``(H, W, ...)`` looked at around face ``box``."""
        centre = (box[:2] + box[2:]) / 2.0
        half = cls.FOCUS * float((box[2:] - box[:2]).max()) / 2.0
        return (int(max(0, centre[0] - half)), int(max(0, centre[1] - half)), int(min(shape[1], centre[0] + half)),
                int(min(shape[0], centre[1] + half)))

    def detect(self, image: np.ndarray, landmarks: bool = False) -> List[Face]:
        """Faces in ``image`` ``(H, W, 3)`` uint8 (around ``focus`` when set), in ``image``'s pixels."""
        offset, zoom = np.zeros(2), 1.0
        if self.focus is not None:
            x0, y0, x1, y1 = self.square(self.focus, image.shape)
            if x1 - x0 >= 32 and y1 - y0 >= 32:
                image, offset = image[y0:y1, x0:x1], np.array([x0, y0], dtype=np.float64)
                zoom = min(1.0, self.FOCUS_SIZE / max(x1 - x0, y1 - y0))
                if zoom < 1.0:
                    from PIL import Image

                    small = (max(1, round((x1 - x0) * zoom)), max(1, round((y1 - y0) * zoom)))
                    image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(small, Image.BILINEAR))
        if self.embeds and self.want_embedding:
            faces = self.backend.detect(image, landmarks=landmarks, embedding=True)
        else:
            faces = self.backend.detect(image, landmarks=landmarks)
        for face in faces:
            face.box = np.asarray(face.box, dtype=np.float64) / zoom + np.tile(offset, 2)
            if face.landmarks is not None:
                face.landmarks = face.landmarks / zoom + offset
        return faces


Sample = Tuple[int, np.ndarray, np.ndarray]  # (frame number, image around the face, face box in its pixels)


class _TrackBuilder:
    """The open track while :class:`_TrackFinder` walks the frames."""

    def __init__(self, start: int, box: np.ndarray, enlarge: float, embedding: Optional[np.ndarray] = None,
                 first: Optional[Sample] = None):
        self.start = start
        self.boxes: List[np.ndarray] = [box]
        self.last_box = box
        self.gap = 0
        size = max(box[2] - box[0], box[3] - box[1])
        centre = (box[:2] + box[2:]) / 2.0
        half = enlarge * size / 2.0
        self.window = np.concatenate([centre - half, centre + half])
        self.agreeing = [] if embedding is None else [embedding]
        self.first = first if embedding is None else None  # embedded when first needed (short tracks never are)
        self.checked = start  # frame of the last identity check that agreed
        self.samples: List[Sample] = []  # face frames since that check, every detect_every frames

    @property
    def embedding(self) -> Optional[np.ndarray]:
        """The identity later checks are compared with: the mean of the checks that agreed."""
        return np.mean(self.agreeing, axis=0) if self.agreeing else None

    def inside(self, box: np.ndarray) -> bool:
        return bool((box[:2] >= self.window[:2]).all() and (box[2:] <= self.window[2:]).all())

    def add(self, box: Optional[np.ndarray]) -> None:
        if box is None:
            self.gap += 1
            self.boxes.append(np.full(4, np.nan))
        else:
            self.gap = 0
            self.boxes.append(box)
            self.last_box = box

    def finish(self, end: Optional[int] = None) -> FaceTrack:
        """The track up to frame ``end`` (exclusive; default: all), trailing frames without a face dropped."""
        boxes = np.array(self.boxes[:None if end is None else end - self.start], dtype=np.float64)
        found = np.flatnonzero(~np.isnan(boxes[:, 0]))
        return FaceTrack(self.start, boxes[:found[-1] + 1], self.embedding)


class _TrackFinder:
    """Per-video state of :func:`find_tracks`: feed it the detection copies of the frames in order."""

    def __init__(self, backend: FaceDetector, options: TrackOptions, scale: np.ndarray):
        self.options = options
        self.scale = scale  # detection copy -> full-resolution pixels, (4,)
        self.detector = _FocusedDetector(backend)
        self.tracker = LandmarkTracker(self.detector, detect_every=options.detect_every)
        self.cuts = SceneCuts(options.scene_threshold)
        self.tracks: List[FaceTrack] = []
        self.current: Optional[_TrackBuilder] = None
        self.last_attempt = -options.detect_every

    def feed(self, index: int, frame: np.ndarray) -> None:
        """Frame number ``index``: ``frame`` ``(h, w, 3)`` uint8, the detection copy."""
        options = self.options
        if self.cuts(frame):
            self.close()
            self.tracker.reset()
            self.last_attempt = -options.detect_every
        box = self._find(index, frame)
        current = self.current
        if box is not None and current is not None and not current.inside(box):
            self.close()
            current = None
        if box is None:
            if current is not None:
                current.add(None)
                if current.gap > options.max_gap:
                    self.close()
            return
        sample = self._sample(index, frame, box / self.scale)
        if current is None:
            self.current = _TrackBuilder(index, box, options.enlarge, first=sample)
            return
        if index - current.checked >= options.identity_every:
            embedding = self._identity(sample)
            if embedding is not None and not self._agrees(embedding):
                self._split((index, box), embedding)
                return
            if embedding is not None:
                current.checked, current.samples = index, []
                current.agreeing.append(embedding)
        elif index - (current.samples[-1][0] if current.samples else current.checked) >= options.detect_every:
            current.samples.append(sample)
        current.add(box)

    @staticmethod
    def _sample(index: int, frame: np.ndarray, box: np.ndarray) -> Sample:
        """What an identity check of frame ``index`` later needs: the part of ``frame`` the focused detector would
        look at (a copy, so a few seconds of samples stay small) and the face ``box`` in its pixels."""
        x0, y0, x1, y1 = _FocusedDetector.square(box, frame.shape)
        return index, frame[y0:y1, x0:x1].copy(), box - np.array([x0, y0, x0, y0], dtype=np.float64)

    def _find(self, index: int, frame: np.ndarray) -> Optional[np.ndarray]:
        """The followed face's box in full-resolution pixels, or None."""
        tracker = self.tracker
        if tracker.last is None and index - self.last_attempt < self.options.detect_every:
            return None  # no face in sight: look again every detect_every frames, not on every frame
        self.detector.focus = None if self.current is None else self.current.last_box / self.scale
        detections = tracker.detections
        tracker.detect(frame, landmarks=True)
        if tracker.detections != detections:
            self.last_attempt = index
        return None if tracker.last is None else _face_box(tracker.last, tracker) * self.scale

    def _identity(self, sample: Sample) -> Optional[np.ndarray]:
        """The identity embedding of the face at ``sample``, or None (no face, or a backend without them)."""
        self.detector.focus, self.detector.want_embedding = sample[2], True
        try:
            faces = [f for f in self.detector.detect(sample[1], landmarks=True) if f.embedding is not None]
        finally:
            self.detector.want_embedding = False
        if not faces:
            return None
        centre = (sample[2][:2] + sample[2][2:]) / 2.0
        return min(faces, key=lambda f: np.abs((f.box[:2] + f.box[2:]) / 2.0 - centre).sum()).embedding

    def _reference(self) -> Optional[np.ndarray]:
        """The open track's identity (its first face is embedded on first use)."""
        track = self.current
        if track.first is not None:
            embedding, track.first = self._identity(track.first), None
            if embedding is not None:
                track.agreeing.append(embedding)
        return track.embedding

    def _agrees(self, embedding: np.ndarray) -> bool:
        reference = self._reference()
        return reference is None or float(np.linalg.norm(embedding - reference)) <= self.options.identity_distance

    def _split(self, now: Optional[Tuple[int, np.ndarray]], now_embedding: Optional[np.ndarray]) -> None:
        """Someone else is in the track since its last agreeing check: end it at the last sample that agrees
        (bisecting the samples, one switch assumed) and start a new track at the first one that does not, or at
        ``now`` (frame number and full-resolution face box of the frame being fed; None when closing)."""
        old = self.current
        low, high = 0, len(old.samples)  # samples[:low] agree, samples[high:] do not
        embeddings: Dict[int, Optional[np.ndarray]] = {}
        while low < high:
            middle = (low + high) // 2
            embeddings[middle] = self._identity(old.samples[middle])
            if embeddings[middle] is None or self._agrees(embeddings[middle]):
                low = middle + 1
            else:
                high = middle
        last_agreeing = old.samples[low - 1][0] if low else old.checked
        self.tracks.append(old.finish(last_agreeing + 1))
        self.current = None
        if low < len(old.samples):
            first = old.samples[low][0]
            self.current = _TrackBuilder(first, old.boxes[first - old.start], self.options.enlarge,
                                         embeddings.get(low), first=old.samples[low])
            for box in old.boxes[first - old.start + 1:]:
                self.current.add(box)
            self.current.samples = old.samples[low + 1:]
        if now is not None:
            box = now[1]
            if self.current is None:
                self.current = _TrackBuilder(now[0], box, self.options.enlarge, now_embedding)
            else:
                self.current.add(box)

    def close(self) -> None:
        """End the open track; its frames after the last identity check are checked first."""
        while self.current is not None and len(self.current.boxes) >= self.options.min_frames:  # short: dropped
            self._reference()
            samples = self.current.samples
            if not samples or samples[-1][0] <= self.current.checked:
                break
            embedding = self._identity(samples[-1])
            if embedding is None or self._agrees(embedding):
                break
            self._split(None, None)
        if self.current is not None:
            self.tracks.append(self.current.finish())
        self.current = None


def load_backend(name: str, detect_size: int) -> FaceDetector:
    """The face backend ``name`` for :func:`find_tracks`. The frames it gets are already downscaled by ffmpeg to
    ``detect_size``, so the dlib backend is told not to resize them again."""
    if name in ("dlib", "auto"):
        try:
            return DlibFaceBackend(detect_size=8 * int(detect_size))
        except MissingWeightsError:
            if name == "dlib":
                raise
    return load_face_backend(name)


def detection_filter(detect_size: int) -> str:
    """The ffmpeg filter that scales a video so its shorter side is ``detect_size`` (never up), even sizes."""
    scale = f"min(1,{int(detect_size)}/min(iw,ih))"
    return f"scale=w='trunc(iw*{scale}/2)*2':h='trunc(ih*{scale}/2)*2':flags=fast_bilinear"


def _full_size(reader: VideoReader) -> Tuple[int, int]:
    """Full-resolution ``(W, H)`` as the frames come out (ffmpeg applies rotation metadata before filters)."""
    width, height = reader.source_size
    small_w, small_h = reader.size
    if (width > height) != (small_w > small_h) and width != height:
        width, height = height, width
    return width, height


def find_tracks(path: str, backend: FaceDetector, options: TrackOptions,
                on_frames: Optional[Callable[[int], None]] = None) -> Tuple[VideoInfo, List[FaceTrack]]:
    """The face tracks of video ``path`` (all lengths; the caller drops short ones) and its :class:`VideoInfo`.

    ``backend``: a face detector (dlib: with identity embeddings and landmark tracking); ``on_frames(n)`` is
    called as frames are analysed (progress). Raises :class:`InputError` when the file does not decode.
    """
    # the deblocking filter is skipped: ~10 % faster decoding, and blocking does not matter to the detector; one
    # decoding thread: the analysis in Python is the slower end of the pipe, and workers run side by side
    reader = VideoReader(path, filters=detection_filter(options.detect_size),
                         input_params=["-skip_loop_filter", "all", "-threads", "1"])
    full_w, full_h = _full_size(reader)
    finder = _TrackFinder(backend, options, np.array([full_w / reader.size[0], full_h / reader.size[1]] * 2))
    index, reported = -1, 0
    for index, frame in enumerate(reader):
        finder.feed(index, frame)
        if on_frames is not None and index + 1 - reported >= 25:
            on_frames(index + 1 - reported)
            reported = index + 1
    finder.close()
    if on_frames is not None and index + 1 > reported:
        on_frames(index + 1 - reported)
    info = VideoInfo(fps=reader.fps, size=(full_w, full_h), frames=index + 1, has_audio=reader.has_audio)
    return info, finder.tracks


def _face_box(face: Face, tracker: LandmarkTracker) -> np.ndarray:
    """The face box ``(x0, y0, x1, y1)`` of ``face``: the detector's box on detection frames, else the same box
    placed on this frame's landmarks (the tracker's box offset), so tracked and detected boxes agree."""
    if tracker.since_detection == 0 or face.landmarks is None or tracker.box_offset is None:
        return np.asarray(face.box, dtype=np.float64)
    low, high = face.landmarks.min(0), face.landmarks.max(0)
    size = float((high - low).max())
    return np.tile((low + high) / 2.0, 2) + tracker.box_offset * size


_FRAME_LINE = re.compile(r"^\s*(\d+)\s+([-\d.eE]+)\s+([-\d.eE]+)\s+([-\d.eE]+)\s+([-\d.eE]+)\s*$")


def parse_voxceleb_txt(path: str) -> Tuple[Dict[str, str], np.ndarray]:
    """One VoxCeleb face-track file: its header (``Identity``, ``Reference``, ...) and ``(N, 5)`` rows
    ``FRAME X Y W H`` (boxes in pixels, or in fractions of the frame as in VoxCeleb2)."""
    header: Dict[str, str] = {}
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            match = _FRAME_LINE.match(line)
            if match:
                rows.append([float(v) for v in match.groups()])
            elif ":" in line:
                key, value = line.split(":", 1)
                header[key.strip()] = value.strip().split()[0] if value.strip() else ""
    if not rows:
        raise InputError(f"VoxCeleb track file {path} has no 'FRAME X Y W H' lines")
    return header, np.array(rows, dtype=np.float64)


def read_voxceleb_tracks(folder: str) -> Dict[str, List[FaceTrack]]:
    """Face tracks of every ``*.txt`` under ``folder`` (VoxCeleb layout ``<person>/<video id>/<utterance>.txt``),
    keyed by video id (the header's ``Reference``, else the parent folder). Frames stay in VoxCeleb's 25 fps
    numbering and boxes as written (pixels or fractions) until :func:`fit_track` places them on a video."""
    if not os.path.isdir(folder):
        raise InputError(f"--voxceleb-txt {folder} is not a folder")
    tracks: Dict[str, List[FaceTrack]] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(".txt"):
                continue
            path = os.path.join(root, name)
            header, rows = parse_voxceleb_txt(path)
            video = header.get("Reference") or os.path.basename(root)
            person = header.get("Identity") or os.path.basename(os.path.dirname(root))
            boxes = np.stack([rows[:, 1], rows[:, 2], rows[:, 1] + rows[:, 3], rows[:, 2] + rows[:, 4]], axis=1)
            tracks.setdefault(video, []).append(FaceTrack(int(rows[0, 0]), boxes, person=person,
                                                          frame_numbers=rows[:, 0].astype(int)))
    return tracks


def fit_track(track: FaceTrack, info: VideoInfo) -> FaceTrack:
    """A VoxCeleb track on the video's own frames: 25 fps frame numbers mapped to ``info.fps``, fractional boxes
    scaled to pixels, one box per video frame (nearest listed frame)."""
    numbers = track.frame_numbers if track.frame_numbers is not None else np.arange(track.start, track.end)
    boxes = track.boxes.copy()
    if np.nanmax(np.abs(boxes)) <= 1.5:
        boxes *= np.array([info.size[0], info.size[1]] * 2, dtype=np.float64)
    times = numbers / VOXCELEB_FPS
    first, last = int(round(times[0] * info.fps)), int(round(times[-1] * info.fps))
    if info.frames:
        last = min(last, info.frames - 1)
    own = np.arange(first, last + 1)
    nearest = np.clip(np.searchsorted(times, own / info.fps), 0, len(times) - 1)
    return FaceTrack(first, boxes[nearest], person=track.person)


def union_box(boxes: Sequence[np.ndarray]) -> np.ndarray:
    """``(x0, y0, x1, y1)`` around every non-NaN row of ``boxes`` ``(T, 4)``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([np.nanmin(boxes[:, :2], axis=0), np.nanmax(boxes[:, 2:], axis=0)])


@dataclass
class IdentityClusters:
    """People seen in one video: a track joins the first cluster whose embedding is within ``distance``."""

    distance: float = TrackOptions.identity_distance
    centres: List[np.ndarray] = field(default_factory=list)

    def assign(self, embedding: Optional[np.ndarray]) -> int:
        """Cluster number of ``embedding`` (0 for the first person, and when there is no embedding)."""
        if embedding is None:
            return 0
        for number, centre in enumerate(self.centres):
            if np.linalg.norm(embedding - centre) <= self.distance:
                return number
        self.centres.append(np.asarray(embedding))
        return len(self.centres) - 1
