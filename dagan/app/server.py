"""``python -m dagan.app``: the server's options, its start (local, size-limited, one temporary folder) and stop."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from typing import List, Optional, Sequence

from ..cliutil import DashUnderscoreParser, run_cli, setup_logging
from ..errors import InputError, MissingWeightsError
from .page import PAGE_CSS, build_app
from .session import DEFAULT_KEEP_MINUTES, DEFAULT_USER_MODELS, USER_MODELS_ENV, WorkArea, find_models, model_folders

logger = logging.getLogger("dagan")

APP_EXTRA_HINT = 'pip install -e ".[app]"'
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 100


def build_parser() -> argparse.ArgumentParser:
    p = DashUnderscoreParser(prog="python -m dagan.app", description="Serve the demo as a local web page.")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST}, this "
                   "computer only; 0.0.0.0 lets anyone on your network use it)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    p.add_argument("--share", action="store_true", help="also publish a public gradio.live link (off by "
                   "default; needs internet and sends your uploads through Gradio's servers)")
    p.add_argument("--max_upload_mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"refuse uploads larger than this (default: {DEFAULT_MAX_UPLOAD_MB} MB)")
    p.add_argument("--models_dir", help=f"user folder of models to offer besides checkpoints/ (default: "
                   f"${USER_MODELS_ENV} or {DEFAULT_USER_MODELS})")
    p.add_argument("--concurrency", type=int, default=2, help="requests animated at the same time (default: 2)")
    p.add_argument("--keep_minutes", type=float, default=DEFAULT_KEEP_MINUTES,
                   help=f"keep results downloadable this long (default: {DEFAULT_KEEP_MINUTES})")
    p.add_argument("--quiet", action="store_true", help="only errors on the console")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _import_gradio():
    # set before Gradio is imported: no usage statistics, no update check
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise MissingWeightsError(f"the web app needs Gradio: {APP_EXTRA_HINT}") from None
    return gradio


def serve(args: argparse.Namespace) -> None:
    """Start the server from parsed :func:`build_parser` arguments; returns when it is stopped."""
    if args.max_upload_mb <= 0:
        raise InputError(f"--max_upload_mb must be positive, got {args.max_upload_mb}")
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be in 1-65535, got {args.port}")
    if args.concurrency < 1:
        raise InputError(f"--concurrency must be at least 1, got {args.concurrency}")
    work = WorkArea(keep_seconds=args.keep_minutes * 60.0)
    # Gradio keeps uploads and served files in GRADIO_TEMP_DIR (read when it is imported): inside the app's
    # folder, removed on exit
    os.environ["GRADIO_TEMP_DIR"] = str(work.uploads)
    try:
        _import_gradio()
    except MissingWeightsError:
        work.close()
        raise
    previous = signal.signal(signal.SIGTERM, _interrupt)
    page = None
    try:
        folders = model_folders(args.models_dir)
        max_bytes = int(args.max_upload_mb * 2 ** 20)
        page = build_app(work, find_models(folders), max_bytes, args.concurrency, rescan_folders=folders)
        page.queue(default_concurrency_limit=args.concurrency)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            logger.warning("listening on %s: anyone who can reach this address can use the app", args.host)
        try:
            _, local_url, _ = page.launch(
                server_name=args.host, server_port=args.port, share=args.share, max_file_size=max_bytes, css=PAGE_CSS,
                inbrowser=False, prevent_thread_lock=True, show_error=False, quiet=True, ssr_mode=False, pwa=False,
                mcp_server=False, run_history=False, footer_links=[], enable_monitoring=False)
        except OSError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"cannot listen on {args.host}:{args.port} ({first}): choose another --port") from None
        print(f"dagan app: {local_url} (temporary files in {work.root}; Ctrl-C to stop)", flush=True)
        while page.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("dagan app: stopping", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        work.close()  # first: closing the server can take seconds, and a SIGKILL then must not leave files
        if page is not None:
            page.close()
            work.close()  # again: whatever Gradio wrote while closing


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the server like Ctrl-C: the temporary folder is removed


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m dagan.app``: 0 when stopped, 2 with one line on a mistake (e.g. no Gradio)."""

    def _main(args_list: List[str]) -> int:
        args = build_parser().parse_args(args_list)
        setup_logging(quiet=args.quiet, debug=args.debug)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests to itself
        serve(args)
        return 0

    return run_cli(_main, argv)
