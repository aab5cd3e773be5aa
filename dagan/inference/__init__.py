"""Inference: the :class:`Animator` (``animator.py``), the embedded default clip (``synthetic.py``), model
loading and device/precision (``loading.py``), the file and stream pipeline over one options dataclass
(``pipeline/``) and the ``demo.py`` command line (``cli.py``, which only parses arguments into those options).
Media I/O lives in :mod:`dagan.io`, face tools in :mod:`dagan.faces`."""
from .animator import Animator

__all__ = ["Animator"]
