"""``python -m dagan.app``: the demo as a local web page (Gradio), for people who do not use a terminal.

The page takes a portrait (default: the built-in astronaut) and a driving video (default: the built-in
generated head motion), the options of ``demo.py`` that matter to a user, and a model from ``checkpoints/``
or a user folder. Pressing *Animate* builds the demo's own argument namespace from the form and calls
:func:`dagan.inference.cli.run`, the code path of ``demo.py``: frames stream through the model (memory stays
flat for long videos), the result keeps the driving audio, and the driving depth video is written beside it.
A *Live webcam* panel streams the browser's camera through the ``demo.py --stream`` set-up
(:func:`dagan.inference.cli.stream_animator`), one :class:`LiveSession` per browser.

Safety defaults of the local server:

* it listens on 127.0.0.1 (``--host``/``--port`` to change; ``--share`` is off unless asked for);
* uploads over ``--max-upload-mb`` are refused by the server, and every upload is checked by content
  (the portrait must decode as an image, the driving clip as a video) with a one-line message in the page;
* everything it writes (Gradio's upload cache, results) lives in one temporary folder created at start,
  old results are swept while it runs and the folder is removed when it stops;
* concurrent requests never share state: each one runs :func:`~dagan.inference.cli.run` with its own model
  and :class:`~dagan.inference.animator.Animator`, in its own run folder.

Gradio is an optional dependency (``pip install -e ".[app]"``) imported only by :func:`build_app` and
:func:`main`, so ``import dagan`` does not need it.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .cliutil import DashUnderscoreParser, run_cli, setup_logging
from .errors import DaganError, InputError, MissingWeightsError
from .inference import cli
from .io.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

logger = logging.getLogger("dagan")

APP_EXTRA_HINT = 'pip install -e ".[app]"'
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 100
#: a finished result stays downloadable this long; older run folders are removed by the next request
DEFAULT_KEEP_MINUTES = 60
#: label of the model entry that means "what demo.py uses without --checkpoint"
SHIPPED_MODEL = "shipped (checkpoints/dagan-small)"
USER_MODELS_ENV = "DAGAN_MODELS"
#: webcam frames the browser sends: small (the model works at 64-256 px; a 1920x1440 camera frame costs more to
#: send than to animate), one every WEBCAM_EVERY_S seconds at most
WEBCAM_CONSTRAINTS = {"video": {"width": {"ideal": 320}, "height": {"ideal": 240}}}
WEBCAM_EVERY_S = 0.04
#: a webcam session (its model and Animator) is freed this long after the browser leaves
LIVE_SESSION_TTL_S = 600
OPTIONS_PER_ROW = 4
#: the live result is a model-size (64 px) frame: let the browser scale it to its box
PAGE_CSS = "#live-result img { width: 100%; height: 100%; object-fit: contain; }"
DEFAULT_USER_MODELS = Path.home() / ".cache" / "dagan" / "models"


# ----------------------------------------------------------------------------------------- the form
@dataclass(frozen=True)
class FormOption:
    """One ``demo.py`` option on the page.

    ``dest``: the demo parser's destination (the default value comes from the parser; an option the parser
    does not have is left off the page, so the form follows the demo). ``kind``: ``"checkbox"`` (``flags``:
    the argv for True, for False), ``"radio"`` (``choices``: ``(label, argv, value)`` triples), ``"slider"``
    or ``"number"`` (an integer; both ``flags[0]`` followed by the value, or nothing when the value is ``off``,
    the form's value for the parser's None).
    """

    dest: str
    label: str
    kind: str
    flags: Tuple[Optional[str], ...] = ()
    choices: Tuple[Tuple[str, Tuple[str, ...], Any], ...] = ()
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 0.05
    off: Optional[float] = None
    info: str = ""

    def default(self, defaults: argparse.Namespace) -> Any:
        value = getattr(defaults, self.dest)
        if self.kind == "radio":
            return next(label for label, _, v in self.choices if v == value)
        return self.off if value is None else value

    def argv(self, value: Any) -> List[str]:
        """The demo arguments for the form value ``value``; :class:`InputError` when it is out of range."""
        if self.kind == "checkbox":
            flag = self.flags[0] if bool(value) else self.flags[1]
            return [flag] if flag else []
        if self.kind == "radio":
            for label, argv, _ in self.choices:
                if value == label:
                    return list(argv)
            raise InputError(f"{self.label}: unknown choice {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{self.label}: expected a number, got {value!r}") from None
        if not self.minimum <= number <= self.maximum:
            raise InputError(f"{self.label}: {number:g} is outside [{self.minimum:g}, {self.maximum:g}]")
        if self.off is not None and number == self.off:
            return []
        return [self.flags[0], str(int(number)) if self.kind == "number" else f"{number:g}"]


#: the options on the page, in order; adding a demo option (e.g. ``--size``) is one line here
FORM_OPTIONS: Tuple[FormOption, ...] = (
    FormOption("relative", "Motion", "radio", choices=(("relative", ("--relative",), True),
                                                        ("absolute", ("--absolute",), False)),
               info="relative: the portrait moves as the driving face moves from its first frame"),
    FormOption("adapt_scale", "Adapt movement scale", "checkbox", flags=("--adapt_scale", "--no_adapt_scale"),
               info="scale relative motion by the face sizes"),
    FormOption("guide", "Face-guided motion", "radio", choices=(("auto", ("--guide", "auto"), "auto"),
                                                                 ("on", ("--guide", "on"), "on"),
                                                                 ("off", ("--guide", "off"), "off")),
               info="the driving face's landmarks set the head's motion (auto: when a face backend is installed)"),
    FormOption("mouth_gain", "Mouth gain", "slider", flags=("--mouth_gain",), minimum=1.0, maximum=5.0, step=0.5,
               off=1.0, info="with the guide: > 1 opens the mouth wider than the model alone does"),
    FormOption("smooth", "Motion smoothing", "slider", flags=("--smooth",), minimum=0.0, maximum=10.0, step=0.1,
               off=0.0, info="0: off; otherwise the keypoint filter's cut-off in Hz (lower = smoother, more lag)"),
    FormOption("crop", "Crop the face", "checkbox", flags=("--crop", "--no_crop"),
               info="detect and crop the face in the portrait and every driving frame (face detector)"),
    FormOption("paste_back", "Paste back", "checkbox", flags=("--paste_back", None),
               info="blend the animated face back into the full portrait"),
    FormOption("smoothing", "Crop smoothing", "slider", flags=("--smoothing",), minimum=0.05, maximum=1.0,
               step=0.05, info="with crop: weight of each new face detection (lower = steadier box)"),
    FormOption("size", "Output size", "radio", choices=tuple((f"{n} px", ("--size", str(n)), n)
                                                             for n in (64, 128, 256, 512))),
    FormOption("max_frames", "At most N frames (0: all)", "number", flags=("--max_frames",), minimum=0,
               maximum=10 ** 7, step=1, off=0),
)


def form_options(parser: Optional[argparse.ArgumentParser] = None) -> List[FormOption]:
    """The :data:`FORM_OPTIONS` the demo's parser knows (all of them with the current demo)."""
    parser = parser or cli.build_parser()
    known = {action.dest for action in parser._actions}
    return [option for option in FORM_OPTIONS if option.dest in known]


# ------------------------------------------------------------------------------------------- models
def find_models(folders: Sequence[Path]) -> Dict[str, Optional[str]]:
    """Models the page offers: label -> ``--checkpoint`` path (None: the demo's default model).

    A model is a folder with a ``config.yaml`` (from ``save_pretrained``) or a single ``.pt`` file of ours,
    directly inside one of ``folders`` (missing folders are skipped)."""
    models: Dict[str, Optional[str]] = {SHIPPED_MODEL: None}
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            is_model = (entry.is_dir() and (entry / "config.yaml").is_file()) or \
                (entry.is_file() and entry.suffix == ".pt")
            if not is_model or entry.resolve() == cli.DEFAULT_CHECKPOINT.resolve():
                continue
            label = f"{folder.name}/{entry.name}"
            while label in models:
                label = f"{folder}/{entry.name}"
            models[label] = str(entry)
    return models


def model_folders(user_folder: Optional[str] = None) -> List[Path]:
    """``checkpoints/`` of the repository, then the user folder (``--models-dir``, ``$DAGAN_MODELS`` or
    ``~/.cache/dagan/models``)."""
    user = user_folder or os.environ.get(USER_MODELS_ENV) or str(DEFAULT_USER_MODELS)
    return [cli.DEFAULT_CHECKPOINT.parent, Path(user)]


# ------------------------------------------------------------------------------------------- inputs
def check_upload(path: Optional[str], kind: str, max_bytes: int) -> Optional[str]:
    """Validate an uploaded file by size and content; returns ``path`` (None stays None = built-in input).

    ``kind``: ``"image"`` (must decode with Pillow) or ``"video"`` (must hold decodable video frames).
    Raises :class:`InputError` with a one-line message that names the file the user picked."""
    if path is None:
        return None
    name = Path(path).name
    size = os.path.getsize(path)
    if size > max_bytes:
        raise InputError(f"{name} is {size / 2 ** 20:.1f} MB; the limit is {max_bytes / 2 ** 20:.0f} MB")
    if kind == "image":
        from .io.images import load_image

        try:
            load_image(path)
        except InputError:
            raise InputError(f"{name} is not an image this app can read (PNG, JPEG, WebP, BMP, TIFF)") from None
        return path
    from .io.video import VideoReader

    try:
        reader = VideoReader(path)
        reader.check_integrity()
        reader.close()
    except InputError as exc:
        if "cannot read video" in str(exc):
            raise InputError(f"{name} is not a video (ffmpeg finds no video stream in it)") from None
        raise InputError(f"{name} cannot be used: {str(exc).replace(path, name)}") from None
    return path


class WorkArea:
    """The app's one temporary folder: ``uploads/`` (Gradio's cache) and one ``runs/<id>/`` per request.

    :meth:`new_run` removes run folders older than ``keep_seconds``; :meth:`close` removes everything."""

    def __init__(self, keep_seconds: float = DEFAULT_KEEP_MINUTES * 60.0, parent: Optional[str] = None):
        self.root = Path(tempfile.mkdtemp(prefix="dagan-app-", dir=parent))
        self.uploads = self.root / "uploads"
        self.runs = self.root / "runs"
        self.uploads.mkdir()
        self.runs.mkdir()
        self.keep_seconds = float(keep_seconds)
        self._lock = threading.Lock()

    def new_run(self) -> Path:
        with self._lock:
            cutoff = time.time() - self.keep_seconds
            for old in self.runs.iterdir():
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            folder = self.runs / uuid.uuid4().hex
            folder.mkdir()
            return folder

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def animate(source: Optional[str], driving: Optional[str], checkpoint: Optional[str], values: Mapping[str, Any],
            run_dir: Path, on_frame: Optional[Callable[[int, Optional[int]], None]] = None,
            detector_factory=None, options: Optional[Sequence[FormOption]] = None) -> Tuple[str, str]:
    """Animate through the demo's own :func:`~dagan.inference.cli.run`; returns (result mp4, depth mp4).

    ``source``/``driving``: file paths or None for the built-in astronaut / head motion; ``checkpoint``:
    ``--checkpoint`` or None for the demo's default model; ``values``: form values by option ``dest``.
    Both videos are written in ``run_dir`` (under a temporary name, renamed when complete)."""
    result, depth = run_dir / "result.mp4", run_dir / "depth.mp4"
    args = demo_args(source, checkpoint, values, options,
                     ["--result_video", str(result), "--save_depth", str(depth), "--quiet"] +
                     ([] if driving is None else ["--driving_video", driving]))
    cli.run(args, detector_factory, on_frame=on_frame)
    return str(result), str(depth)


def demo_args(source: Optional[str], checkpoint: Optional[str], values: Mapping[str, Any],
              options: Optional[Sequence[FormOption]] = None, extra: Sequence[str] = ()) -> argparse.Namespace:
    """The demo's argument namespace for the form: parsed by ``demo.py``'s own parser."""
    options = form_options() if options is None else options
    argv = list(extra)
    if source is not None:
        argv += ["--source_image", source]
    if checkpoint is not None:
        argv += ["--checkpoint", checkpoint]
    for option in options:
        argv += option.argv(values[option.dest])
    return cli.build_parser().parse_args(argv)


class LiveSession:
    """One browser's webcam animation: its own :class:`~dagan.Animator` from
    :func:`dagan.inference.cli.stream_animator` (the ``demo.py --stream`` set-up), used under a lock.

    ``key`` identifies the settings it was built for (a new portrait, model or option builds a new session);
    the first frame after start or :meth:`reanchor` anchors relative motion. ``prepare``: what each webcam
    frame goes through first (from :func:`~dagan.inference.cli.stream_animator`: the face crop with "Crop the
    face")."""

    def __init__(self, key: Any, animator, description: str,
                 prepare: Optional[Callable[[np.ndarray], np.ndarray]] = None):
        self.key, self.animator, self.description = key, animator, description
        self.prepare = prepare
        self.frames = 0
        self.busy = 0.0  # seconds spent animating
        self.started: Optional[float] = None
        self._lock = threading.Lock()

    @classmethod
    def start(cls, source: Optional[str], checkpoint: Optional[str], values: Mapping[str, Any],
              options: Optional[Sequence[FormOption]] = None, detector_factory=None, key: Any = None) -> "LiveSession":
        from .inference.cli import stream_animator

        return cls(key, *stream_animator(demo_args(source, checkpoint, values, options), detector_factory))

    def animate(self, frame: np.ndarray) -> np.ndarray:
        """``frame``: ``(H, W, 3)`` uint8 RGB from the webcam -> the animated ``(S, S, 3)`` uint8 frame."""
        with self._lock:
            began = time.perf_counter()
            output = self.animator(frame if self.prepare is None else self.prepare(frame))
            self.frames += 1
            self.busy += time.perf_counter() - began
            if self.started is None:
                self.started = began
            return output

    def reanchor(self) -> None:
        with self._lock:
            self.animator.reset()

    def status(self) -> str:
        seconds = time.perf_counter() - self.started if self.started is not None else 0.0
        rate = (self.frames - 1) / seconds if self.frames > 1 and seconds > 0 else 0.0
        per_frame = 1000.0 * self.busy / max(1, self.frames)
        return (f"Live: {self.frames} frames animated, {rate:.1f} frames/s, {per_frame:.0f} ms per frame in the "
                f"model ({self.description}).")


def page_wording(text: str, paths: Sequence[Optional[str]], options: Sequence[FormOption]) -> str:
    """A demo message as the page says it: uploaded files by their names (not the server's paths) and the
    demo's checkbox flags as the page's labels (``use --no-crop`` -> ``use "Crop the face" off``)."""
    for path in paths:
        if path:
            text = text.replace(path, Path(path).name)
    for option in options:
        if option.kind != "checkbox":
            continue
        for flag, state in sorted(zip(option.flags, ("on", "off")), key=lambda f: -len(f[0] or "")):
            for spelling in {flag, (flag or "").replace("_", "-")} - {None, ""}:
                text = text.replace(spelling, f'"{option.label}" {state}')
    return text


# -------------------------------------------------------------------------------------------- page
INTRO = ("Animate a portrait with the head motion of a driving video. Leave the inputs empty for the built-in "
         "example (the astronaut and a generated head motion). Files stay on this computer.")


def build_app(work: WorkArea, models: Mapping[str, Optional[str]], max_upload_bytes: int,
              concurrency: int = 2, detector_factory=None, rescan_folders: Sequence[Path] = ()):
    """The page as a ``gr.Blocks`` (not launched). ``models``: label -> ``--checkpoint`` (see
    :func:`find_models`); ``rescan_folders``: folders re-scanned on each page load; ``detector_factory``:
    passed to :func:`dagan.inference.cli.run` (tests inject a detector)."""
    import gradio as gr

    from .inference.synthetic import astronaut

    options = form_options()
    defaults = cli.build_parser().parse_args([])
    known_models = dict(models)
    image_types = list(IMAGE_EXTENSIONS)
    video_types = list(VIDEO_EXTENSIONS)

    def message(text: str) -> str:
        return f"**Error:** {text}"

    def upload_changed(kind: str, label: str, builtin: str, builtin_value=lambda: None):
        """The preview update and status line for a changed upload of ``kind`` ("image" or "video")."""

        def changed(path):
            try:
                check_upload(path, kind, max_upload_bytes)
            except InputError as exc:
                return gr.update(value=None, label=f"{label} (not usable)"), message(str(exc))
            if path is None:
                return gr.update(value=builtin_value(), label=f"{label}: {builtin}"), ""
            return gr.update(value=path, label=label), ""

        return changed

    source_changed = upload_changed("image", "Portrait", "built-in astronaut", astronaut)
    driving_changed = upload_changed("video", "Driving video", "built-in head motion")

    def rescan_models():
        known_models.update(find_models(rescan_folders))
        return gr.update(choices=list(known_models))

    hidden = gr.update(value=None, visible=False)

    def run_clicked(source, driving, model_label, *values, progress=gr.Progress()):
        started = time.perf_counter()
        try:
            source = check_upload(source, "image", max_upload_bytes)
            driving = check_upload(driving, "video", max_upload_bytes)
            if model_label not in known_models:
                raise InputError(f"unknown model {model_label!r}")
            progress(0.0, desc="loading the model")

            def on_frame(done: int, total: Optional[int]) -> None:
                progress((done, total), desc="animating", unit="frames")

            result, depth = animate(source, driving, known_models[model_label],
                                    {o.dest: v for o, v in zip(options, values)}, work.new_run(), on_frame,
                                    detector_factory, options)
        except DaganError as exc:
            return None, None, hidden, hidden, message(page_wording(str(exc), [source, driving], options))
        except Exception as exc:  # the request boundary: log the traceback here, show one line in the page
            logger.exception("request failed")
            return None, None, hidden, hidden, message(f"internal error ({type(exc).__name__}); see the server log")
        seconds = time.perf_counter() - started
        status = f"Done in {seconds:.1f} s."
        return (result, depth, gr.update(value=result, visible=True), gr.update(value=depth, visible=True),
                status)

    def webcam_frame(frame, session, source, model_label, *values):
        if frame is None:
            return gr.update(), session, gr.update()
        key = (source, model_label) + tuple(values)
        try:
            if session is None or session.key != key:
                if model_label not in known_models:
                    raise InputError(f"unknown model {model_label!r}")
                session = LiveSession.start(check_upload(source, "image", max_upload_bytes), known_models[model_label],
                                            {o.dest: v for o, v in zip(options, values)}, options,
                                            detector_factory, key)
            return session.animate(frame), session, session.status()
        except DaganError as exc:
            return None, None, message(page_wording(str(exc), [source], options))
        except Exception as exc:  # the request boundary, as in run_clicked
            logger.exception("webcam frame failed")
            return None, None, message(f"internal error ({type(exc).__name__}); see the server log")

    def reanchor_clicked(session):
        if session is not None:
            session.reanchor()
        return session

    keep = max(1, int(work.keep_seconds))
    # Gradio's own copies (uploads, served results) age out like the run folders
    with gr.Blocks(title="dagan: animate a portrait", analytics_enabled=False,
                   delete_cache=(max(5, keep // 4), keep)) as page:
        gr.Markdown("# dagan: animate a portrait\n" + INTRO)
        with gr.Row():
            with gr.Column():
                source_file = gr.File(label="Upload a portrait (image)", file_types=image_types,
                                      elem_id="source-upload")
                source_view = gr.Image(value=astronaut(), label="Portrait: built-in astronaut", interactive=False,
                                       height=220, elem_id="source-preview")
            with gr.Column():
                driving_file = gr.File(label="Upload a driving video", file_types=video_types,
                                       elem_id="driving-upload")
                driving_view = gr.Video(label="Driving video: built-in head motion", interactive=False,
                                        height=220, elem_id="driving-preview")
        with gr.Accordion("Options", open=True):
            model = gr.Dropdown(choices=list(known_models), value=next(iter(known_models)), label="Model",
                                elem_id="model")
            fields = []
            for start in range(0, len(options), OPTIONS_PER_ROW):
                with gr.Row():
                    fields += [_component(gr, option, option.default(defaults))
                               for option in options[start:start + OPTIONS_PER_ROW]]
        button = gr.Button("Animate", variant="primary", elem_id="animate")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            result_view = gr.Video(label="Result (with the driving audio)", interactive=False, height=320,
                                   elem_id="result-video")
            depth_view = gr.Video(label="Driving depth", interactive=False, height=320, elem_id="depth-video")
        with gr.Row():
            result_download = gr.DownloadButton("Download the result (mp4)", visible=False,
                                                elem_id="download-result")
            depth_download = gr.DownloadButton("Download the depth video (mp4)", visible=False,
                                               elem_id="download-depth")
        with gr.Accordion("Live webcam", open=False, elem_id="webcam-panel"):
            gr.Markdown("Animate the portrait with your webcam, live: press the camera button, then Record. "
                        "Your first frame is the reference pose. Keep your face in the middle of the picture, or tick "
                        "\"Crop the face\" to have it found in every frame.")
            with gr.Row():
                webcam = gr.Image(sources=["webcam"], streaming=True, label="Webcam", height=256,
                                  webcam_options=gr.WebcamOptions(mirror=True, constraints=WEBCAM_CONSTRAINTS),
                                  elem_id="webcam")
                live_view = gr.Image(label="Live result", interactive=False, height=256, elem_id="live-result")
            with gr.Row():
                live_status = gr.Markdown(elem_id="live-status")
                reanchor = gr.Button("Take the next frame as the reference pose", size="sm", elem_id="reanchor")
            live_state = gr.State(None, time_to_live=LIVE_SESSION_TTL_S)
        source_file.change(source_changed, source_file, [source_view, status])
        driving_file.change(driving_changed, driving_file, [driving_view, status])
        button.click(run_clicked, [source_file, driving_file, model] + fields,
                     [result_view, depth_view, result_download, depth_download, status],
                     concurrency_limit=concurrency)
        webcam.stream(webcam_frame, [webcam, live_state, source_file, model] + fields,
                      [live_view, live_state, live_status], stream_every=WEBCAM_EVERY_S,
                      concurrency_limit=concurrency, show_progress="hidden")
        reanchor.click(reanchor_clicked, live_state, live_state)
        if rescan_folders:
            page.load(rescan_models, None, model)
    return page


def _component(gr, option: FormOption, default: Any):
    if option.kind == "checkbox":
        return gr.Checkbox(value=bool(default), label=option.label, info=option.info or None)
    if option.kind == "radio":
        return gr.Radio([label for label, _, _ in option.choices], value=default, label=option.label,
                        info=option.info or None)
    if option.kind == "slider":
        return gr.Slider(option.minimum, option.maximum, value=default, step=option.step, label=option.label,
                         info=option.info or None)
    return gr.Number(value=default, minimum=option.minimum, maximum=option.maximum, step=option.step,
                     precision=0, label=option.label, info=option.info or None)


# -------------------------------------------------------------------------------------------- main
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


if __name__ == "__main__":
    sys.exit(main())
