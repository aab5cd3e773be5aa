"""The page (Gradio ``Blocks``): the inputs with previews, the form, the result and depth videos with downloads,
and the live webcam panel. Gradio is imported only when the page is built."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..errors import DaganError, InputError
from ..inference.pipeline import AnimateOptions
from ..io.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from .form import FormOption, form_options, page_wording
from .session import LiveSession, WorkArea, animate, check_upload, find_models

logger = logging.getLogger("dagan")

#: webcam frames the browser sends: small (the model works at 64-256 px; a 1920x1440 camera frame costs more to
#: send than to animate), one every WEBCAM_EVERY_S seconds at most
WEBCAM_CONSTRAINTS = {"video": {"width": {"ideal": 320}, "height": {"ideal": 240}}}
WEBCAM_EVERY_S = 0.04
#: a webcam session (its model and Animator) is freed this long after the browser leaves
LIVE_SESSION_TTL_S = 600
OPTIONS_PER_ROW = 4
#: the live result is a model-size (64 px) frame: let the browser scale it to its box
PAGE_CSS = "#live-result img { width: 100%; height: 100%; object-fit: contain; }"


INTRO = ("Animate a portrait with the head motion of a driving video. Leave the inputs empty for the built-in "
         "example (the astronaut talking, blinking and turning). Files stay on this computer.")


def build_app(work: WorkArea, models: Mapping[str, Optional[str]], max_upload_bytes: int,
              concurrency: int = 2, detector_factory=None, rescan_folders: Sequence[Path] = ()):
    """The page as a ``gr.Blocks`` (not launched). ``models``: label -> ``--checkpoint`` (see
    :func:`find_models`); ``rescan_folders``: folders re-scanned on each page load; ``detector_factory``:
    passed to :func:`dagan.inference.pipeline.run` (tests inject a detector)."""
    import gradio as gr

    from ..inference.synthetic import astronaut

    options = form_options()
    defaults = AnimateOptions()
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
        return gr.Radio([label for label, _ in option.choices], value=default, label=option.label,
                        info=option.info or None)
    if option.kind == "slider":
        return gr.Slider(option.minimum, option.maximum, value=default, step=option.step, label=option.label,
                         info=option.info or None)
    return gr.Number(value=default, minimum=option.minimum, maximum=option.maximum, step=option.step,
                     precision=0, label=option.label, info=option.info or None)
