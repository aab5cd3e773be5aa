"""Moved to :mod:`dagan.io.video` (the one media module); these names stay importable from here."""
from ..io.video import (  # noqa: F401
    IMAGE_EXTENSIONS, TRUNCATION_TOLERANCE, VIDEO_EXTENSIONS, VIDEO_OUTPUT_CODECS, VIDEO_OUTPUT_EXTENSIONS,
    DepthWriter, VideoReader, VideoWriter, check_output_path, check_video_output_extension, colorize_depth,
    ffmpeg_exe, ffmpeg_message, is_image_path, probe, read_video)
