"""Streaming video I/O through ffmpeg, one frame in memory at a time: decoding (:mod:`.reader`: files and
cameras), encoding (:mod:`.writer`) and depth maps out (:mod:`.depth`). Every name is importable from
``dagan.io.video``."""
from .depth import DepthWriter, colorize_depth
from .reader import (IMAGE_EXTENSIONS, TRUNCATION_TOLERANCE, VIDEO_EXTENSIONS, PathLike, VideoReader, camera_input,
                     decode_video, ffmpeg_exe, is_image_path, open_camera, probe, read_video)
from .writer import (VIDEO_OUTPUT_CODECS, VIDEO_OUTPUT_EXTENSIONS, VideoWriter, check_output_path,
                     check_video_output_extension, ffmpeg_message)

__all__ = ["DepthWriter", "colorize_depth", "IMAGE_EXTENSIONS", "TRUNCATION_TOLERANCE", "VIDEO_EXTENSIONS", "PathLike",
           "VideoReader", "camera_input", "decode_video", "ffmpeg_exe", "is_image_path", "open_camera", "probe",
           "read_video", "VIDEO_OUTPUT_CODECS", "VIDEO_OUTPUT_EXTENSIONS", "VideoWriter", "check_output_path",
           "check_video_output_extension", "ffmpeg_message"]
