"""Media in and out, one way for training, evaluation and inference.

* :mod:`dagan.io.images` -- any still image -> ``(H, W, 3)`` uint8 RGB (16-bit scaled, alpha composited over
  white, EXIF orientation), and the one resize policy (:func:`~dagan.io.images.fit_frames`: centre-crop to
  the target aspect, antialiased bilinear);
* :mod:`dagan.io.video` -- streaming decoding of files and cameras (:class:`~dagan.io.video.VideoReader`, one
  output frame per decoded frame, so variable frame rates are not resampled) and atomic encoding
  (:class:`~dagan.io.video.VideoWriter`, ffmpeg's exit status checked).
"""
