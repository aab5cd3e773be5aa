#!/usr/bin/env python
"""Animate a portrait with a driving video: ``python demo.py`` (embedded default) or
``python demo.py --source_image me.png --driving_video drive.mp4 --result_video out.mp4``.
See ``python demo.py --help``; the logic lives in :mod:`dagan.inference.cli`."""
import sys

from dagan.inference.cli import main

if __name__ == "__main__":
    sys.exit(main())
