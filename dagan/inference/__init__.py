"""Inference: the :class:`Animator` (``animator.py``), streaming video I/O with audio passthrough
(``video.py``), image loading (``images.py``), face crops and paste-back (``faces.py``), the embedded default
clip (``synthetic.py``) and the ``demo.py`` command line (``cli.py``)."""
from .animator import Animator

__all__ = ["Animator"]
