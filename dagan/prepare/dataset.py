"""Raw videos in, a ``train.py`` dataset out: the inputs, the split by person, the workers, resuming, the summary.

Each video is one job (:func:`prepare_video`): find its face tracks (or read VoxCeleb's), drop tracks shorter
than ``min_frames``, name a person per track, crop and write the clips, then record the video as done in
``OUT/.prepare/<video>.json``. A rerun skips recorded videos and, inside a video, clips whose file exists. A
video that cannot be decoded, or holds no usable face, is reported on one line and counted; it never stops the
others. At the end ``OUT/metadata.csv`` lists every clip.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import queue
import shutil
import signal
import sys
import zlib
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import DatasetError, InputError
from ..io.video import VIDEO_EXTENSIONS
from ..utils import atomic_write_bytes
from .clips import CLIP_FORMATS, METADATA_COLUMNS, clip_path, plan_clips, write_clips
from .tracks import FaceTrack, IdentityClusters, TrackOptions, VideoInfo, find_tracks, fit_track, load_backend

PERSON_FROM = ("video", "folder")
STATE_DIR = ".prepare"


@dataclass
class PrepareOptions:
    """Everything that shapes the prepared dataset (see ``python -m dagan.prepare --help``)."""

    size: int = 256
    format: str = "mp4"
    audio: bool = False
    test_fraction: float = 0.2
    test_ids: Tuple[str, ...] = ()
    person_from: str = "video"
    face_backend: str = "dlib"
    tracks: TrackOptions = field(default_factory=TrackOptions)

    def validate(self) -> None:
        if self.format not in CLIP_FORMATS:
            raise InputError(f"--format must be one of {', '.join(CLIP_FORMATS)}, got {self.format!r}")
        if self.person_from not in PERSON_FROM:
            raise InputError(f"--person-from must be one of {', '.join(PERSON_FROM)}, got {self.person_from!r}")
        if self.size < 16:
            raise InputError(f"--size must be at least 16, got {self.size}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise InputError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")
        if not 1.0 <= self.tracks.enlarge <= 4.0:
            raise InputError(f"--enlarge must be in [1, 4] (1.5-1.8 is usual), got {self.tracks.enlarge}")
        if self.tracks.min_frames < 2 or self.tracks.detect_every < 1 or self.tracks.detect_size < 64:
            raise InputError("--min-frames must be >= 2, --detect-every >= 1 and --detect-size >= 64")
        if self.audio and self.format != "mp4":
            raise InputError("--audio needs --format mp4 (frame folders have no sound)")

    def signature(self) -> str:
        """What a finished video's record must match to be skipped on a rerun."""
        settings = asdict(self)
        settings.pop("test_fraction")
        settings.pop("test_ids")
        return json.dumps(settings, sort_keys=True)


@dataclass
class RawVideo:
    """One input: its ``path``, the ``video`` id its clips are named by, its ``person`` id, and the persons of the
    test split (each clip's split follows its own person: a video may show several)."""

    path: str
    video: str
    person: str
    test_persons: frozenset = frozenset()


@dataclass
class VideoResult:
    """What became of one video: ``status`` is ``done``, ``resumed``, ``failed`` (does not decode) or
    ``no-face`` (no face track long enough); ``rows``: its clips' ``metadata.csv`` lines."""

    path: str
    status: str
    message: str = ""
    rows: List[Dict[str, object]] = field(default_factory=list)
    written: int = 0


def list_inputs(raw: str, person_from: str = "video") -> List[RawVideo]:
    """The videos of ``raw``: a video file, a folder (searched recursively for video files) or a list file
    (one path a line, relative to the list's folder, optionally followed by a person id)."""
    if not os.path.exists(raw):
        raise InputError(f"raw input not found: {raw}")
    entries: List[Tuple[str, Optional[str]]] = []
    if os.path.isdir(raw):
        for root, dirs, files in os.walk(raw):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            entries += [(os.path.join(root, f), None) for f in sorted(files)
                        if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith(".")]
    elif raw.lower().endswith(VIDEO_EXTENSIONS):
        entries = [(raw, None)]
    else:
        base = os.path.dirname(os.path.abspath(raw))
        with open(raw, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.strip().split()
                if parts and not parts[0].startswith("#"):
                    entries.append((os.path.join(base, parts[0]), parts[1] if len(parts) > 1 else None))
    if not entries:
        raise InputError(f"no videos in {raw} (looked for {', '.join(VIDEO_EXTENSIONS)} files)")
    stems = [os.path.splitext(os.path.basename(p))[0] for p, _ in entries]
    videos = []
    for (path, person), stem in zip(entries, stems):
        video = stem if stems.count(stem) == 1 else f"{stem}-{zlib.crc32(os.path.abspath(path).encode()):08x}"
        if person is None:
            person = os.path.basename(os.path.dirname(os.path.abspath(path))) if person_from == "folder" else stem
        videos.append(RawVideo(path, _safe(video), _safe(person)))
    return videos


def _safe(name: str) -> str:
    """A name usable in file names (``#`` separates the parts of a clip name)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "video"


def held_out_persons(persons: Sequence[str], test_fraction: float, test_ids: Sequence[str] = ()) -> set:
    """The persons of the test split: ``test_ids`` when given, else ``round(test_fraction x n)`` persons (at least
    one when there are two or more and the fraction is not 0) picked by a hash of their id, so the choice does
    not depend on the order of the inputs."""
    unique = sorted(set(persons))
    if test_ids:
        return set(test_ids)
    count = int(round(test_fraction * len(unique)))
    if test_fraction > 0 and len(unique) > 1:
        count = min(max(count, 1), len(unique) - 1)
    return set(sorted(unique, key=lambda p: (zlib.crc32(p.encode()), p))[:count])


def prepare_video(raw: RawVideo, out: str, options: PrepareOptions, backend=None,
                  voxceleb: Optional[Sequence[FaceTrack]] = None,
                  on_frames: Optional[Callable[[int], None]] = None, decode_threads: int = 0) -> VideoResult:
    """Prepare one video (see the module docstring). ``backend``: the face detector (unused with ``voxceleb``
    tracks); ``decode_threads``: ffmpeg's, for the clips. Decoding problems come back as a ``failed`` result,
    not an exception."""
    record = os.path.join(out, STATE_DIR, raw.video + ".json")
    done = _read_record(record, options)
    if done is not None and all(os.path.exists(os.path.join(out, r["partition"], _entry(r, options)))
                                for r in done):
        return VideoResult(raw.path, "resumed", rows=done)
    try:
        if voxceleb is not None:
            info = _probe(raw.path)
            tracks = [fit_track(t, info) for t in voxceleb]
            if on_frames is not None:
                on_frames(info.frames)
        else:
            info, tracks = find_tracks(raw.path, backend, options.tracks, on_frames)
        kept = [t for t in tracks if len(t) >= options.tracks.min_frames]
        if not kept:
            found = f"{len(tracks)} face track(s), all shorter than" if tracks else "no face track of"
            return VideoResult(raw.path, "no-face", f"{found} {options.tracks.min_frames} frames")
        clusters = IdentityClusters(options.tracks.identity_distance)
        persons, partitions = [], []
        for track in kept:
            number = clusters.assign(track.embedding)
            base = _safe(track.person) if track.person else raw.person
            persons.append(base if number == 0 else f"{base}_{number}")  # another face in the video: same split
            partitions.append("test" if base in raw.test_persons else "train")
        clips = plan_clips(kept, info, raw.path, raw.video, persons, partitions, options.tracks.enlarge)
        todo = [c for c in clips if not os.path.exists(clip_path(out, c, options.format))]
        write_clips(raw.path, todo, info, out, options.size, options.format, options.audio, decode_threads)
    except InputError as error:
        return VideoResult(raw.path, "failed", str(error))
    rows = [c.row(info) for c in clips]
    atomic_write_bytes(record, json.dumps({"signature": options.signature(), "rows": rows}).encode())
    return VideoResult(raw.path, "done", rows=rows, written=len(todo))


def _entry(row: Dict[str, object], options: PrepareOptions) -> str:
    return str(row["video_id"]) + (".mp4" if options.format == "mp4" else "")


def _read_record(path: str, options: PrepareOptions) -> Optional[List[Dict[str, object]]]:
    try:
        with open(path) as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    return record["rows"] if record.get("signature") == options.signature() else None


def _probe(path: str) -> VideoInfo:
    """fps, size, frame count and audio of a video without decoding its frames (VoxCeleb tracks need no faces)."""
    import imageio_ffmpeg

    from ..io.video import VideoReader

    reader = VideoReader(path)
    reader.close()
    try:
        frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
    except (RuntimeError, OSError, ValueError) as error:
        raise InputError(f"video {path} is corrupt: {error}") from None
    return VideoInfo(fps=reader.fps, size=reader.size, frames=frames, has_audio=reader.has_audio)


# ------------------------------------------------------------------------------------------------ workers
_WORKER: Dict[str, object] = {}  # per worker process: its face backend and the progress queue


def _worker_init(backend_name: str, detect_size: int, needs_faces: bool, progress) -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it and stops the pool with SIGTERM, which
    # a worker turns into a quiet exit that still unwinds (temporary clips are removed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)
    _WORKER["backend"] = load_backend(backend_name, detect_size) if needs_faces else None
    _WORKER["progress"] = progress


def _exit_quietly(signum, frame):
    raise SystemExit(128 + signum)


def _worker_job(raw: RawVideo, out: str, options: PrepareOptions, voxceleb) -> VideoResult:
    progress = _WORKER["progress"]
    return prepare_video(raw, out, options, _WORKER["backend"], voxceleb, on_frames=progress.put, decode_threads=1)


def _remove_partials(out: str) -> None:
    """Temporary clips left by a run that was killed (``.<name>.partial.*``): ``train.py`` must not see them."""
    for split in ("train", "test"):
        folder = os.path.join(out, split)
        for name in os.listdir(folder):
            if name.startswith(".") and ".partial." in name:
                path = os.path.join(folder, name)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)


@dataclass
class Summary:
    """Counts of a run and the path of its metadata."""

    videos: int = 0
    prepared: int = 0
    resumed: int = 0
    failed: int = 0
    no_face: int = 0
    clips: Dict[str, int] = field(default_factory=lambda: {"train": 0, "test": 0})
    written: int = 0
    frames: int = 0
    metadata: str = ""

    def line(self) -> str:
        return (f"{self.clips['train'] + self.clips['test']} clips (train {self.clips['train']}, test "
                f"{self.clips['test']}; {self.written} written now) from {self.prepared + self.resumed} of "
                f"{self.videos} videos ({self.resumed} already done); {self.failed} failed to decode, "
                f"{self.no_face} without a usable face; metadata {self.metadata}")


def prepare_dataset(raw: str, out: str, options: Optional[PrepareOptions] = None, workers: int = 1,
                    voxceleb_txt: Optional[str] = None, progress: bool = True, backend=None,
                    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> Summary:
    """Prepare every video of ``raw`` into ``out/train`` and ``out/test`` (see the module docstring).

    ``workers``: processes, one video each at a time; ``voxceleb_txt``: a folder of VoxCeleb face-track files,
    used instead of detection for the videos they name; ``backend``: a face detector to use instead of
    ``options.face_backend`` (``workers=1`` only); ``report``: where the one-line problems go. Raises
    :class:`DatasetError` when no clip at all could be prepared.
    """
    from tqdm import tqdm

    from .tracks import read_voxceleb_tracks

    options = options or PrepareOptions()
    options.validate()
    root = os.path.join(os.path.abspath(out), "")
    videos = [v for v in list_inputs(raw, options.person_from) if not os.path.abspath(v.path).startswith(root)]
    if not videos:
        raise InputError(f"no videos in {raw} outside the output folder {out}")
    vox = read_voxceleb_tracks(voxceleb_txt) if voxceleb_txt else {}
    persons = []
    for video in videos:
        tracks = vox.get(os.path.splitext(os.path.basename(video.path))[0], [])
        persons += [_safe(t.person) for t in tracks if t.person] or [video.person]
    test = frozenset(held_out_persons(persons, options.test_fraction, options.test_ids))
    for video in videos:
        video.test_persons = test
    for split in ("train", "test", STATE_DIR):
        os.makedirs(os.path.join(out, split), exist_ok=True)
    _remove_partials(out)
    jobs = [(v, vox.get(os.path.splitext(os.path.basename(v.path))[0])) for v in videos]
    summary = Summary(videos=len(videos))
    rows: List[Dict[str, object]] = []
    video_bar = tqdm(total=len(videos), desc="videos", unit="video", disable=not progress, position=0)
    frame_bar = tqdm(desc="frames", unit="frame", disable=not progress, position=1)

    def count_frames(n: int) -> None:
        frame_bar.update(n)
        summary.frames += n

    def collect(result: VideoResult) -> None:
        video_bar.update(1)
        if result.status == "failed":
            summary.failed += 1
        elif result.status == "no-face":
            summary.no_face += 1
        else:
            summary.resumed += result.status == "resumed"
            summary.prepared += result.status == "done"
            summary.written += result.written
            rows.extend(result.rows)
            return
        with tqdm.external_write_mode(file=sys.stderr):
            report(f"skipped {result.path}: {result.message}")

    try:
        if workers <= 1 or len(jobs) <= 1:
            if backend is None and any(v is None for _, v in jobs):
                backend = load_backend(options.face_backend, options.tracks.detect_size)
            for video, tracks in jobs:
                collect(prepare_video(video, out, options, backend, tracks, on_frames=count_frames))
        else:
            _run_pool(jobs, out, options, workers, collect, count_frames)
    finally:
        video_bar.close()
        frame_bar.close()
    for row in rows:
        summary.clips[str(row["partition"])] += 1
    summary.metadata = os.path.join(out, "metadata.csv")
    _write_metadata(summary.metadata, rows)
    if not rows:
        raise DatasetError(f"no clips were prepared from the {len(videos)} video(s) of {raw}: "
                           f"{summary.failed} failed to decode, {summary.no_face} without a face track of "
                           f"{options.tracks.min_frames} frames")
    return summary


def _run_pool(jobs, out: str, options: PrepareOptions, workers: int, collect, count_frames) -> None:
    """The jobs on ``workers`` processes. On Ctrl-C or SIGTERM the workers are stopped at once (they inherit the
    CLI's handler, so their temporary clips are removed as they unwind), not left to finish their videos."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    frames = context.Queue()
    needs_faces = any(tracks is None for _, tracks in jobs)
    with context.Pool(min(workers, len(jobs)), initializer=_worker_init,
                      initargs=(options.face_backend, options.tracks.detect_size, needs_faces, frames)) as pool:
        pending = [pool.apply_async(_worker_job, (video, out, options, tracks)) for video, tracks in jobs]
        while pending:
            pending[0].wait(0.25)
            _drain(frames, count_frames)
            for result in [r for r in pending if r.ready()]:
                pending.remove(result)
                collect(result.get())
        _drain(frames, count_frames)
    # leaving the block terminates the pool: at once on an error, and after the last job otherwise


def _drain(frames, count_frames) -> None:
    while True:
        try:
            count_frames(frames.get_nowait())
        except queue.Empty:
            return


def _write_metadata(path: str, rows: Sequence[Dict[str, object]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METADATA_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: (str(r["partition"]), str(r["video_id"]))))
    atomic_write_bytes(path, text.getvalue().encode())


__all__ = ["PrepareOptions", "RawVideo", "Summary", "VideoResult", "list_inputs", "prepare_dataset",
           "prepare_video", "held_out_persons"]
