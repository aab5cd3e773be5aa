"""The file and stream pipeline of ``demo.py`` and the web app, over one typed options dataclass.

A front-end fills an :class:`AnimateOptions` (``demo.py`` from its arguments, the web app from its form) and
calls :func:`run` (files), :func:`run_stream` (``--stream``: a camera or a file in real time) or
:func:`stream_animator` (a live Animator the caller feeds, e.g. the web app's webcam). A frame's path in
:func:`run`: the driving reader (:func:`~.inputs.open_driving`: ffmpeg decode, then the face crop with a
smoothed box or a resize) -> the :class:`~dagan.Animator` (anchored at the first frame or at
:func:`~.inputs.find_anchor`'s) -> :func:`~.run.compose` (paste-back into the full source, side-by-side panels)
-> the video writer (in a writer thread, :class:`BackgroundWriter`; the driving audio kept).

Modules: :mod:`.options` (the dataclass and what is derived from it), :mod:`.inputs` (model, detector,
source, driving reader, anchor), :mod:`.run` (the runs), :mod:`.overlap` (the writer thread and the realtime
:func:`stream`). Nothing here knows the CLI.
"""
from .inputs import (GUIDE_FRAME_SIZE, Driving, Source, cached_detector, driving_size, face_guide, find_anchor,
                     frame_processor, load_model, open_driving, output_size, prepare_source)
from .options import AnimateOptions, default_batch_size, guide_detect_every, keypoint_smoothing
from .overlap import BackgroundWriter, StreamFrame, StreamStats, stream
from .run import build_animator, compose, run, run_stream, stream_animator

__all__ = ["AnimateOptions", "run", "run_stream", "stream_animator", "build_animator", "compose", "Source", "Driving",
           "prepare_source", "open_driving", "find_anchor", "frame_processor", "load_model", "cached_detector",
           "face_guide", "driving_size", "output_size", "GUIDE_FRAME_SIZE", "default_batch_size",
           "guide_detect_every", "keypoint_smoothing", "BackgroundWriter", "StreamFrame", "StreamStats", "stream"]
