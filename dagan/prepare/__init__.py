"""Training data from raw face videos, the VoxCeleb / FOMM cropping protocol: ``python -m dagan.prepare RAW OUT``.

``RAW`` (a video, a folder of videos or a list file) becomes ``OUT/train/<clip>`` and ``OUT/test/<clip>``, the
layout ``train.py`` reads, plus ``OUT/metadata.csv`` (FOMM's ``vox-metadata.csv`` columns). One clip is one
person in one shot, cropped around the face with one fixed square box and resized to ``size`` (256).

* :mod:`dagan.prepare.tracks` -- where the faces are (detection on a small copy, tracking in between, cuts at
  lost faces, shot changes, faces leaving the crop window and identity changes; VoxCeleb track files);
* :mod:`dagan.prepare.clips` -- the crop of a track and the clip files (mp4 CRF 18 or PNG folders, atomic);
* :mod:`dagan.prepare.dataset` -- inputs, split by person, worker processes, resuming and the summary.

Example::

    >>> from dagan.prepare import PrepareOptions, prepare_dataset
    >>> summary = prepare_dataset("raw_videos/", "data/mine", PrepareOptions(test_fraction=0.1), workers=2)
    >>> print(summary.line())
"""
from .clips import Clip, crop_box, crop_frame
from .dataset import PrepareOptions, Summary, list_inputs, prepare_dataset, prepare_video, held_out_persons
from .tracks import FaceTrack, SceneCuts, TrackOptions, VideoInfo, find_tracks, read_voxceleb_tracks

__all__ = ["Clip", "FaceTrack", "PrepareOptions", "SceneCuts", "Summary", "TrackOptions", "VideoInfo", "crop_box",
           "crop_frame", "find_tracks", "list_inputs", "prepare_dataset", "prepare_video", "read_voxceleb_tracks",
           "held_out_persons"]
