"""What the benchmark scripts share (they run as ``python benchmarks/NAME.py``, so this folder is on the path)."""
from __future__ import annotations

import json
from typing import Optional


def print_report(report: dict, out: Optional[str] = None) -> None:
    """Print ``report`` as indented JSON and, with ``out``, also write it there (atomically: a crash never
    leaves half a result file)."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        from dagan.utils import atomic_write_bytes

        atomic_write_bytes(out, (text + "\n").encode())
