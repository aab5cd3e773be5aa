"""Inference: the :class:`Animator` (``animator.py``), streaming video I/O with audio passthrough
(``video.py``), image loading (``images.py``), face crops and paste-back (``faces.py``), the embedded default
clip (``synthetic.py``), model loading and device/precision (``loading.py``), the overlap and streaming helpers
(``pipeline.py``) and the ``demo.py`` command line with its ``--stream`` mode (``cli.py``)."""
from .animator import Animator

__all__ = ["Animator"]
