"""``python -m dagan.app``: the demo as a local web page (Gradio), for people who do not use a terminal.

The page takes a portrait (default: the built-in astronaut) and a driving video (default: the built-in
generated head motion), the options of ``demo.py`` that matter to a user, and a model from ``checkpoints/``
or a user folder. Pressing *Animate* fills :class:`~dagan.inference.pipeline.AnimateOptions` from the form
(:mod:`.form`) and calls :func:`dagan.inference.pipeline.run`, the code path of ``demo.py``: frames stream
through the model (memory stays flat for long videos), the result keeps the driving audio, and the driving
depth video is written beside it. A *Live webcam* panel streams the browser's camera through the
``demo.py --stream`` set-up (:func:`dagan.inference.pipeline.stream_animator`), one :class:`LiveSession` per
browser.

Safety defaults of the local server (:mod:`.server`):

* it listens on 127.0.0.1 (``--host``/``--port`` to change; ``--share`` is off unless asked for);
* uploads over ``--max-upload-mb`` are refused by the server, and every upload is checked by content
  (the portrait must decode as an image, the driving clip as a video) with a one-line message in the page;
* everything it writes (Gradio's upload cache, results) lives in one temporary folder created at start,
  old results are swept while it runs and the folder is removed when it stops;
* concurrent requests never share state: each one runs :func:`~dagan.inference.pipeline.run` with its own
  model and :class:`~dagan.inference.animator.Animator`, in its own run folder (:mod:`.session`).

Gradio is an optional dependency (``pip install -e ".[app]"``) imported only by :func:`build_app` and
:func:`main`, so ``import dagan`` does not need it.
"""
from .form import FORM_OPTIONS, FormOption, form_options, options_from_form, page_wording
from .page import INTRO, build_app
from .server import (APP_EXTRA_HINT, DEFAULT_HOST, DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT, build_parser, main,
                     serve)
from .session import (DEFAULT_KEEP_MINUTES, SHIPPED_MODEL, USER_MODELS_ENV, LiveSession, WorkArea, animate,
                      check_upload, find_models, model_folders)

__all__ = ["FORM_OPTIONS", "FormOption", "form_options", "options_from_form", "page_wording", "INTRO", "build_app",
           "APP_EXTRA_HINT", "DEFAULT_HOST", "DEFAULT_MAX_UPLOAD_MB", "DEFAULT_PORT", "build_parser", "main", "serve",
           "DEFAULT_KEEP_MINUTES", "SHIPPED_MODEL", "USER_MODELS_ENV", "LiveSession", "WorkArea", "animate",
           "check_upload", "find_models", "model_folders"]
