"""``python -m dagan.prepare RAW OUT``: raw face videos -> ``OUT/train|test/<clip>`` for ``train.py``."""
from __future__ import annotations

import sys
from typing import List, Optional

from ..cliutil import DashUnderscoreParser, run_cli, setup_logging


def parser() -> DashUnderscoreParser:
    from .clips import CLIP_FORMATS
    from .dataset import PERSON_FROM
    from .tracks import TrackOptions

    defaults = TrackOptions()
    p = DashUnderscoreParser(prog="python -m dagan.prepare",
                             description="Cut raw face videos into aligned face clips for train.py "
                                         "(the VoxCeleb / FOMM cropping protocol)")
    p.add_argument("raw", help="a video file, a folder of videos (searched recursively) or a list file "
                               "(one path a line, optionally followed by a person id)")
    p.add_argument("out", help="dataset root to fill: OUT/train, OUT/test, OUT/metadata.csv")
    p.add_argument("--size", type=int, default=256, help="side of the square clips in pixels")
    p.add_argument("--enlarge", type=float, default=defaults.enlarge,
                   help="crop side / face size (1.5-1.8 is usual; 1.8 matches the shared sample clips)")
    p.add_argument("--min-frames", type=int, default=defaults.min_frames, help="shortest clip kept")
    p.add_argument("--format", choices=CLIP_FORMATS, default="mp4", help="mp4 (H.264 CRF 18) or PNG frame folders")
    p.add_argument("--audio", action="store_true", help="keep the source's audio in mp4 clips")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--test-fraction", type=float, default=0.2,
                       help="share of the persons held out as the test split (chosen by a hash of their id)")
    split.add_argument("--test-ids", nargs="+", default=(), metavar="ID", help="the person ids of the test split")
    p.add_argument("--person-from", choices=PERSON_FROM, default="video",
                   help="person id of a video: its file name, or its folder's name (VoxCeleb: id10001/<video>.mp4)")
    p.add_argument("--voxceleb-txt", default=None, metavar="DIR",
                   help="VoxCeleb face-track files (FRAME X Y W H lines) to use instead of face detection for the "
                        "videos they name")
    p.add_argument("--detect-every", type=int, default=defaults.detect_every,
                   help="run the face detector on every n-th frame, track landmarks in between")
    p.add_argument("--detect-size", type=int, default=defaults.detect_size,
                   help="shorter side of the downscaled copy faces are detected on")
    p.add_argument("--workers", type=int, default=1, help="processes (one video each at a time)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(debug=args.debug)
    from .dataset import PrepareOptions, prepare_dataset
    from .tracks import TrackOptions

    tracks = TrackOptions(detect_every=args.detect_every, detect_size=args.detect_size, enlarge=args.enlarge,
                          min_frames=args.min_frames)
    options = PrepareOptions(size=args.size, format=args.format, audio=args.audio, test_fraction=args.test_fraction,
                             test_ids=tuple(args.test_ids), person_from=args.person_from, tracks=tracks)
    summary = prepare_dataset(args.raw, args.out, options, workers=args.workers, voxceleb_txt=args.voxceleb_txt,
                              progress=not args.no_progress)
    print(f"prepared {summary.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
