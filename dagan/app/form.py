"""The page's form: which :class:`~dagan.inference.pipeline.AnimateOptions` fields it shows, how a form value
becomes a field value, and how the pipeline's messages read on the page."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from ..errors import InputError
from ..inference.pipeline import AnimateOptions


@dataclass(frozen=True)
class FormOption:
    """One :class:`AnimateOptions` field on the page.

    ``dest``: the field (the default value comes from :class:`AnimateOptions`; a name it does not have is left
    off the page, so the form follows the options). ``kind``: ``"checkbox"``, ``"radio"`` (``choices``:
    ``(label, value)`` pairs), ``"slider"`` or ``"number"`` (an integer); a slider or number at ``off`` means
    the field's default (e.g. None, "no smoothing"). ``flags``: a checkbox's ``demo.py`` flags for on and off,
    only to reword the pipeline's messages for the page (:func:`page_wording`).
    """

    dest: str
    label: str
    kind: str
    flags: Tuple[Optional[str], ...] = ()
    choices: Tuple[Tuple[str, Any], ...] = ()
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 0.05
    off: Optional[float] = None
    info: str = ""

    def default(self, defaults: AnimateOptions) -> Any:
        """The form value that shows ``defaults``' value of this field."""
        value = getattr(defaults, self.dest)
        if self.kind == "radio":
            return next(label for label, v in self.choices if v == value)
        return self.off if value is None else value

    def value(self, form_value: Any) -> Any:
        """The field value for the form value ``form_value``; :class:`InputError` when it is out of range."""
        if self.kind == "checkbox":
            return bool(form_value)
        if self.kind == "radio":
            for label, value in self.choices:
                if form_value == label:
                    return value
            raise InputError(f"{self.label}: unknown choice {form_value!r}")
        try:
            number = float(form_value)
        except (TypeError, ValueError):
            raise InputError(f"{self.label}: expected a number, got {form_value!r}") from None
        if not self.minimum <= number <= self.maximum:
            raise InputError(f"{self.label}: {number:g} is outside [{self.minimum:g}, {self.maximum:g}]")
        if self.off is not None and number == self.off:
            return getattr(AnimateOptions(), self.dest)
        return int(number) if self.kind == "number" else number


#: the options on the page, in order; adding an option (e.g. ``size``) is one line here
FORM_OPTIONS: Tuple[FormOption, ...] = (
    FormOption("relative", "Motion", "radio", choices=(("relative", True), ("absolute", False)),
               info="relative: the portrait moves as the driving face moves from its first frame"),
    FormOption("adapt_scale", "Adapt movement scale", "checkbox", flags=("--adapt_scale", "--no_adapt_scale"),
               info="scale relative motion by the face sizes"),
    FormOption("motion", "What moves the face", "radio",
               choices=(("auto", "auto"), ("landmarks", "landmarks"), ("keypoints", "keypoints")),
               info="landmarks: the driving face's landmarks and the portrait's depth move the portrait (mouth, "
                    "blinks, head turns); keypoints: the model's own motion; auto: landmarks when a face is found"),
    FormOption("mouth_fill", "Inside the mouth", "radio",
               choices=(("driver's", "driver"), ("dark", "dark"), ("none", "none")),
               info="with landmarks: the driver's teeth and tongue, a dark cavity, or the stretched lips"),
    FormOption("guide", "Face-guided motion", "radio", choices=(("auto", "auto"), ("on", "on"), ("off", "off")),
               info="the driving face's landmarks set the head's motion (auto: when a face backend is installed)"),
    FormOption("mouth_gain", "Mouth gain", "slider", minimum=1.0, maximum=5.0, step=0.5, off=1.0,
               info="with the guide: > 1 opens the mouth wider than the model alone does"),
    FormOption("smooth", "Motion smoothing", "slider", minimum=0.0, maximum=10.0, step=0.1, off=0.0,
               info="0: off; otherwise the keypoint filter's cut-off in Hz (lower = smoother, more lag)"),
    FormOption("crop", "Crop the face", "checkbox", flags=("--crop", "--no_crop"),
               info="detect and crop the face in the portrait and every driving frame (face detector)"),
    FormOption("paste_back", "Paste back", "checkbox", flags=("--paste_back", None),
               info="blend the animated face back into the full portrait"),
    FormOption("smoothing", "Crop smoothing", "slider", minimum=0.05, maximum=1.0, step=0.05,
               info="with crop: weight of each new face detection (lower = steadier box)"),
    FormOption("size", "Output size", "radio", choices=tuple((f"{n} px", n) for n in (64, 128, 256, 512))),
    FormOption("max_frames", "At most N frames (0: all)", "number", minimum=0, maximum=10 ** 7, step=1, off=0),
)


def form_options() -> List[FormOption]:
    """The :data:`FORM_OPTIONS` that :class:`AnimateOptions` has (all of them with the current pipeline)."""
    known = {field.name for field in dataclasses.fields(AnimateOptions)}
    return [option for option in FORM_OPTIONS if option.dest in known]


def options_from_form(values: Mapping[str, Any], options: Optional[Sequence[FormOption]] = None,
                      **fixed: Any) -> AnimateOptions:
    """The :class:`AnimateOptions` of the form ``values`` (by field name) and the ``fixed`` fields the app sets
    itself (inputs, model, outputs)."""
    options = form_options() if options is None else options
    return AnimateOptions(**{option.dest: option.value(values[option.dest]) for option in options}, **fixed)


def page_wording(text: str, paths: Sequence[Optional[str]], options: Sequence[FormOption]) -> str:
    """A pipeline message as the page says it: uploaded files by their names (not the server's paths) and the
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
