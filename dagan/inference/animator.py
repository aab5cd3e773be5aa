"""The :class:`Animator`: set a source once, then animate driving frames one at a time or as a stream.

Everything that depends only on the source (its depth, keypoints, encoder features and the attention
queries of its depth features) is computed once in :meth:`Animator.set_source` through
:meth:`DaGAN.prepare_source`; each driving frame then costs depth + keypoints + generator decode only, as
explicit stages: :meth:`DaGAN.drive` (driving depth and keypoints), the motion stage (smoothing, then
:meth:`Animator._keypoint_motion`: the face guide or the motion normalisation) and :meth:`DaGAN.render`. The
model runs on the fast path of :mod:`dagan.fast` (folded BatchNorms, channels-last, sub-pixel decoder, chunked
attention, conv bodies in ``dtype``) for every dtype.

Over ~450 lines on purpose: one class is the per-video session (anchor, both motion paths, batching, streaming);
splitting it would spread that state over modules.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterable, Iterator, List, Optional, Union

import numpy as np
import torch

from ..errors import InputError, MissingWeightsError, NoFaceError
from ..faces import LandmarkTracker, select_face
from ..io.images import ImageLike, as_image, image_to_tensor, resize_image, tensor_to_images
from ..models.dagan import KP, DaGAN, SourceState, anchor_motion, normalize_kp
from ..utils import resolve_device, resolve_inference_dtype
from .guide import GUIDE_DETECT_EVERY, MOUTH_GAIN_POINTS, LandmarkGuide, face_points, stack_landmarks
from .landmark_motion import DEFAULT_MOUTH_FILL, LandmarkMotion, usable_landmarks
from .smoothing import KeypointSmoother, OneEuroFilter, OneEuroSettings

logger = logging.getLogger("dagan")
Frame = Union[np.ndarray, torch.Tensor]
#: what moves the portrait (see :class:`Animator`'s ``motion``)
MOTIONS = ("auto", "landmarks", "keypoints")


class Animator:
    """Animate one source portrait with a stream of driving frames.

    Args:
        model: a :class:`~dagan.DaGAN` (moved to ``device`` and put in eval mode).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ...
        dtype: precision of the conv bodies: ``"float32"``, ``"bfloat16"``, ``"float16"`` (or the torch
            dtypes), or ``"auto"``: the fastest precision whose quality holds on the device
            (:func:`~dagan.utils.default_inference_dtype`). Inputs, outputs, keypoint heads, warps and the motion
            normalisation stay float32.
        fast: put the model on the fast path (:func:`dagan.fast.optimize_for_inference`, **in place**: the
            model becomes inference-only; float32 stays within 1e-4 of the plain model). ``False`` keeps the
            plain model (for debugging) and runs low precisions under autocast.
        relative: relative motion (the official default) or absolute keypoints.
        adapt_movement_scale: scale relative motion by the ratio of source/driving keypoint hull areas.
        batch_size: frames per forward pass in :meth:`animate_stream`.
        output_size: side of the results (default: the model's size). Larger than the model, the source is
            kept at this size and warped along the upsampled motion, so the result is as sharp as the source
            where it can be copied (:func:`~dagan.models.generator.render_output`).
        smooth: temporal smoothing of the driving keypoints (and of the guide's landmarks): ``True`` (One-Euro
            defaults), a :class:`~dagan.inference.smoothing.OneEuroSettings`, or None/False (off, the default).
        guide: face-guided head motion (:mod:`dagan.inference.guide`): the driving face's 68 landmarks set
            the global (similarity) motion of the keypoints, which then follow a driver's head fully on any face.
            ``True`` loads the default face backend (:func:`~dagan.faces.load_face_backend`,
            :class:`~dagan.errors.MissingWeightsError` when none is installed), or pass a detector object
            (``detect(image, landmarks=True)``); None/False: off (the default). Landmarks are found on the
            frames as given (before resizing to the model), so give full-size frames. Relative motion only
            (with absolute keypoints the driver's own detector output is used as it is).
        guide_detect_every: the guide's face detector runs on every n-th driving frame (default 1: every
            frame); in between the landmarks are tracked (:class:`~dagan.faces.LandmarkTracker`, for
            backends with ``fit_landmarks``, e.g. dlib: ~4 ms instead of ~9 ms a 256 px frame; realtime use
            takes 10). Tracking needs the frames in video order; :meth:`reset` and :meth:`set_anchor` restart it.
        mouth_gain: with the guide, multiplies the own motion of keypoints tied to the lower jaw and lip
            (:data:`~dagan.inference.guide.MOUTH_GAIN_POINTS`; the shipped model's lower-lip and chin
            keypoints): > 1 opens the mouth wider (default 1: as the driver's landmarks say).
        motion: what moves the portrait. ``"landmarks"``: the landmark motion stage
            (:class:`~dagan.inference.landmark_motion.LandmarkMotion`): the driving face's 68 landmarks and the
            portrait's depth warp the portrait at ``output_size``, the mouth opens and the eyes blink; no network
            runs per frame. ``"keypoints"``: the model's keypoint motion and generator (the official path, with
            the face guide when ``guide`` is set). ``"auto"``: landmarks when a face backend is installed and
            the portrait has a face, else keypoints (logged). A portrait without a face raises
            :class:`~dagan.errors.NoFaceError` with ``"landmarks"``.
        mouth_fill: with the landmark stage, what paints the inside of an opening mouth:
            ``"driver"`` (the driver's mouth interior, colour-matched; the default), ``"dark"`` (a shaded cavity,
            no identity leak), ``"generator"`` (the model's decoder moved by the stage's motion: a network pass
            per frame) or ``"none"``.
        face_detector: the face backend of the landmark stage and the guide (an object with
            ``detect(image, landmarks=True)``); default: the one ``guide`` names, else
            :func:`~dagan.faces.load_face_backend`.

    Frames are ``(H, W, 3)`` uint8 arrays (any size, resized to ``model.image_size``) or float tensors
    ``(3, H, W)`` in [0, 1]. Results come back in the same kind: ``(O, O, 3)`` uint8 arrays for arrays,
    ``(3, O, O)`` float tensors for tensors, ``O`` = ``output_size``.

    Example::

        >>> anim = Animator(DaGAN.from_pretrained("checkpoints/dagan-small"), device="auto")
        >>> anim.set_source("portrait.png")
        >>> for frame in reader:                # the first frame anchors relative motion
        ...     out = anim(frame)               # (S, S, 3) uint8
        >>> anim.reset()                        # the next frame becomes the new anchor
    """

    def __init__(self, model: DaGAN, device: Union[str, torch.device] = "auto",
                 dtype: Union[str, torch.dtype] = torch.float32, relative: bool = True,
                 adapt_movement_scale: bool = True, batch_size: int = 1, output_size: Optional[int] = None,
                 smooth: Union[None, bool, OneEuroSettings] = None, fast: bool = True, guide: Any = None,
                 guide_detect_every: int = GUIDE_DETECT_EVERY, mouth_gain: float = 1.0, motion: str = "keypoints",
                 mouth_fill: str = DEFAULT_MOUTH_FILL, face_detector: Any = None):
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "prepare_source"):
            raise InputError(f"Animator needs a DaGAN model, got {type(model).__name__}")
        self.device = resolve_device(device)
        self.dtype = resolve_inference_dtype(dtype, self.device)
        self.fast = bool(fast)
        self.model = model.to(self.device).eval()
        if self.fast:
            from ..fast import inference_model

            self.model = inference_model(self.model, self.dtype)
        self.size = int(model.image_size)
        self.relative = bool(relative)
        self.adapt_movement_scale = bool(adapt_movement_scale)
        if int(batch_size) < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        if output_size is not None and int(output_size) < 8:
            raise InputError(f"output size must be at least 8 pixels, got {output_size}")
        self.output_size = self.size if output_size is None else int(output_size)
        self.smoother: Optional[KeypointSmoother] = None
        if smooth:
            self.smoother = KeypointSmoother(smooth if isinstance(smooth, OneEuroSettings) else None)
        self.face_detector = None
        self.guide: Optional[LandmarkGuide] = None
        self.guide_filter: Optional[OneEuroFilter] = None
        if motion not in MOTIONS:
            raise InputError(f"motion must be one of {', '.join(MOTIONS)}, got {motion!r}")
        if guide is not None and guide is not False and hasattr(guide, "detect") and face_detector is None:
            face_detector = guide
        self.stage: Optional[LandmarkMotion] = None
        self.motion = motion
        if motion != "keypoints":
            if not self.relative:
                raise InputError("the landmark motion stage is relative motion: use relative=True or "
                                 "motion='keypoints'")
            if face_detector is None:
                from ..faces import load_face_backend

                try:
                    face_detector = load_face_backend("auto", device=str(self.device))
                except MissingWeightsError:
                    if motion == "landmarks":
                        raise
                    logger.info("no face backend installed: the model's keypoint motion animates")
            if face_detector is not None:
                self.stage = LandmarkMotion(self.output_size, mouth_fill=mouth_fill)
                self.face_detector = LandmarkTracker(face_detector, guide_detect_every)
        self.stage_active = False
        self.landmark_filter: Optional[OneEuroFilter] = None
        if smooth and self.stage is not None:
            self.landmark_filter = OneEuroFilter(smooth if isinstance(smooth, OneEuroSettings) else None)
        if guide is not None and guide is not False:
            if not self.relative:
                raise InputError("face-guided motion works with relative motion: use relative=True or guide=None")
            if guide is True:
                from ..faces import load_face_backend

                guide = face_detector or load_face_backend("auto", device=str(self.device))
            if not hasattr(guide, "detect"):
                raise InputError(f"guide must be True, False/None or a face detector, got {type(guide).__name__}")
            if self.face_detector is None:
                self.face_detector = LandmarkTracker(guide, guide_detect_every)
            self.guide = LandmarkGuide(tied=getattr(model, "kp_landmarks", ()), mouth_gain=mouth_gain)
            if smooth:
                self.guide_filter = OneEuroFilter(smooth if isinstance(smooth, OneEuroSettings) else None)
            if mouth_gain != 1.0 and not any(m in MOUTH_GAIN_POINTS for _, m in self.guide.tied):
                logger.warning("mouth gain %g has no effect: the model has no keypoint tied to the lower jaw or "
                               "lip (train.kp_landmarks)", mouth_gain)
        elif mouth_gain != 1.0:
            raise InputError("the mouth gain works with face-guided motion: turn the guide on")
        self.state: Optional[SourceState] = None
        self.source_image: Optional[np.ndarray] = None
        self.kp_driving_initial: Optional[KP] = None
        self.movement_scale = 1.0
        self._autocast_ok = True

    # ------------------------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.fast or self.dtype == torch.float32 or not self._autocast_ok:
            return contextlib.nullcontext()
        try:
            return torch.autocast(device_type=self.device.type, dtype=self.dtype)
        except (RuntimeError, ValueError) as exc:  # e.g. a dtype the device's autocast does not support
            logger.warning("autocast %s on %s is not supported (%s): running in float32", self.dtype,
                           self.device.type, exc)
            self._autocast_ok = False
            return contextlib.nullcontext()

    def _frames_to_tensor(self, frames: Union[Frame, List[Frame]]) -> torch.Tensor:
        """A frame or a list/stack of frames -> ``(T, 3, S, S)`` float32 on the device."""
        if isinstance(frames, torch.Tensor):
            t = frames.unsqueeze(0) if frames.dim() == 3 else frames
            if t.dim() != 4 or t.shape[1] != 3 or not t.is_floating_point():
                raise InputError(f"driving tensors must be float (3, H, W) or (T, 3, H, W) in [0, 1], "
                                 f"got {tuple(frames.shape)} {frames.dtype}")
            if t.shape[2:] != (self.size, self.size):
                t = torch.nn.functional.interpolate(t.float(), size=(self.size, self.size), mode="bilinear",
                                                    align_corners=False, antialias=True)
            return t.to(self.device, torch.float32)
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            frames = list(frames)
        if not isinstance(frames, (list, tuple)):
            frames = [frames]
        if len(frames) == 0:
            raise InputError("no driving frames given")
        if isinstance(frames[0], torch.Tensor):
            return self._frames_to_tensor(torch.stack([f if f.dim() == 3 else f[0] for f in frames]))
        arrays = [resize_image(as_image(f, "driving frame"), self.size) for f in frames]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0).to(self.device)

    def _landmarks(self, frames: Union[Frame, List[Frame]]) -> List[Optional[np.ndarray]]:
        """The guide's landmarks of each frame (keypoint coordinates; None: no face), found on the frames as
        given."""
        if isinstance(frames, torch.Tensor):
            frames = list(frames.unsqueeze(0) if frames.dim() == 3 else frames)
        elif isinstance(frames, np.ndarray) and frames.ndim == 4:
            frames = list(frames)
        elif not isinstance(frames, (list, tuple)):
            frames = [frames]
        out: List[Optional[np.ndarray]] = []
        for frame in frames:
            if isinstance(frame, torch.Tensor):
                frame = tensor_to_images(frame.unsqueeze(0) if frame.dim() == 3 else frame)[0]
            image = as_image(frame, "driving frame")
            faces = self.face_detector.detect(image, landmarks=True)
            out.append(face_points(select_face(faces), image.shape[1], image.shape[0], self.size))
        return out

    def _keypoint_motion(self, kp_driving: KP, landmarks: Optional[List[Optional[np.ndarray]]]) -> KP:
        """The motion stage of keypoint motion: the (smoothed) driving keypoints ``(T, K, 2)`` /
        ``(T, K, 2, 2)`` and, with the guide, each frame's landmarks (smoothed too) -> the normalised keypoints
        :meth:`DaGAN.render` takes: the face guide's, or the motion normalisation from the anchor
        (:func:`~dagan.models.dagan.normalize_kp`)."""
        if self.guide is None:
            return normalize_kp(self.state.kp, kp_driving, self.kp_driving_initial, self.relative,
                                self.movement_scale)[0]
        if self.guide_filter is not None:
            landmarks = [None if lm is None else self.guide_filter(torch.as_tensor(lm, dtype=torch.float32)).numpy()
                         for lm in landmarks]
        return self.guide(kp_driving, stack_landmarks(landmarks))

    # ----------------------------------------------------------------------------------- the API
    @torch.no_grad()
    def set_source(self, image: ImageLike) -> None:
        """Set the portrait to animate: a path, an ``(H, W, 3)`` uint8 array or a ``(3, H, W)`` tensor in
        [0, 1]. Caches depth, keypoints and generator features; re-anchors relative motion."""
        source_full = None
        if isinstance(image, torch.Tensor) and image.is_floating_point():
            source = self._frames_to_tensor(image)[:1]
            self.source_image = tensor_to_images(source)[0]
            if self.output_size != self.size:
                full = image.unsqueeze(0) if image.dim() == 3 else image[:1]
                source_full = torch.nn.functional.interpolate(
                    full.float(), size=(self.output_size, self.output_size), mode="bicubic", align_corners=False,
                    antialias=True).clamp(0, 1).to(self.device)
        else:
            full = as_image(image, "source image")
            self.source_image = resize_image(full, self.size)
            source = image_to_tensor(self.source_image).to(self.device)
            if self.output_size != self.size:
                source_full = image_to_tensor(resize_image(full, self.output_size)).to(self.device)
        with self._autocast():
            self.state = self.model.prepare_source(source, source_full)
        self._set_stage_source(source if source_full is None else source_full)
        self.reset()

    def _set_stage_source(self, portrait: torch.Tensor) -> None:
        """Give the landmark stage the portrait ``(1, 3, O, O)`` with its landmarks and depth (or fall back to
        keypoint motion when ``motion="auto"`` finds no face)."""
        self.stage_active = False
        if self.stage is None:
            return
        image = tensor_to_images(portrait)[0]
        face = select_face(self.face_detector.detector.detect(image, landmarks=True))
        if face is None or not usable_landmarks(face.landmarks):
            if self.motion == "landmarks":
                raise NoFaceError("no face in the source image: the landmark motion stage needs one (use "
                                  "motion='keypoints' to animate the whole picture)")
            logger.warning("no face in the source image: the model's keypoint motion animates it")
            return
        self.stage.set_source(portrait.float(), face.landmarks, self.state.depth.float())
        self.stage_active = True

    def reset(self) -> None:
        """Forget the anchor: the next driving frame becomes the reference of relative motion."""
        self.kp_driving_initial = None
        self.movement_scale = 1.0
        if self.smoother is not None:
            self.smoother.reset()
        if self.guide is not None:
            self.guide.reset()
        if self.guide_filter is not None:
            self.guide_filter.reset()
        if self.face_detector is not None:
            self.face_detector.reset()
        if self.landmark_filter is not None:
            self.landmark_filter.reset()
        self.last_landmarks: Optional[np.ndarray] = None
        if self.stage is not None:
            self.stage.anchor = None

    @torch.no_grad()
    def set_anchor(self, frame: Frame, landmarks: Optional[np.ndarray] = None) -> None:
        """Use ``frame`` as the reference of relative motion (e.g. the best-matching driving frame).
        ``landmarks``: its guide landmarks when already known (found on ``frame`` otherwise; with the landmark
        stage: its 68 landmarks in pixels of ``frame``)."""
        self._require_source()
        if self.stage_active:
            self.face_detector.reset()
            frames = self._native_tensor(frame)
            points = self._face_landmarks(frames)[0] if landmarks is None else landmarks
            if not usable_landmarks(points):
                logger.warning("no face in the anchor frame: the portrait stays still until a frame with a face")
                return
            self.stage.set_anchor(points, frames[:1])
            self.last_landmarks = np.asarray(points, np.float32)
            return
        if self.guide is not None and landmarks is None:
            self.face_detector.reset()  # the anchor need not be the next frame of the video
            landmarks = self._landmarks(frame)[0]
        driving = self._frames_to_tensor(frame)[:1]
        with self._autocast():
            kp = self.model.detect_keypoints(driving)
        self.kp_driving_initial, self.movement_scale = anchor_motion(self.state.kp, kp, self.relative,
                                                                     self.adapt_movement_scale)
        if self.guide is not None:
            self.guide.set_anchor(landmarks, self.kp_driving_initial, self.state.kp, self.movement_scale)
            if landmarks is None:
                logger.warning("no face in the anchor frame: motion is not face-guided until the next anchor")

    def _require_source(self) -> None:
        if self.state is None:
            raise InputError("no source image: call Animator.set_source(image) first")

    @torch.no_grad()
    def animate_tensor(self, driving: torch.Tensor, return_details: bool = False,
                       landmarks: Optional[List[Optional[np.ndarray]]] = None):
        """Animate ``(T, 3, H, W)`` float frames in [0, 1] -> ``(T, 3, O, O)`` float32 in [0, 1] (or the
        model's dict of intermediates with ``return_details``); frames of another size than the model's are
        resized to it. Anchors on the first frame when no anchor is set. ``landmarks``: the guide's landmarks of
        the frames (keypoint coordinates), found on ``driving`` itself (as given: full-size frames give better
        landmarks) when the guide is on and they are not given.

        With the landmark stage, ``driving`` may be any size (give full-size frames: the landmarks are found on
        them) and ``landmarks`` are each frame's 68 landmarks in its pixels (None: no face)."""
        self._require_source()
        if self.stage_active:
            return self._animate_landmarks(driving, return_details, landmarks)
        if self.guide is not None:
            if landmarks is None:
                landmarks = self._landmarks(driving)
            if len(landmarks) != driving.shape[0]:
                raise InputError(f"got landmarks of {len(landmarks)} frames for {driving.shape[0]} driving frames")
        driving = self._frames_to_tensor(driving)
        if self.kp_driving_initial is None:
            self.set_anchor(driving[:1], None if landmarks is None else landmarks[0])
        with self._autocast():
            motion = self.model.drive(self.state, driving)
            if self.smoother is not None:
                motion["kp_driving"] = self.smoother(motion["kp_driving"])
            kp_norm = self._keypoint_motion(motion["kp_driving"], landmarks)
            out = self.model.render(self.state, kp_norm)
        if not return_details:
            return out["prediction"].float()
        out.update(motion, kp_norm=kp_norm, adapt_movement_scale=self.movement_scale)
        return {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}

    def _native_tensor(self, frames: Union[Frame, List[Frame]]) -> torch.Tensor:
        """Frames as ``(T, 3, H, W)`` float32 in [0, 1] on the device, at their own size."""
        if isinstance(frames, torch.Tensor):
            t = frames.unsqueeze(0) if frames.dim() == 3 else frames
            return t.to(self.device, torch.float32)
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            frames = list(frames)
        if not isinstance(frames, (list, tuple)):
            frames = [frames]
        if isinstance(frames[0], torch.Tensor):
            return torch.stack([f if f.dim() == 3 else f[0] for f in frames]).to(self.device, torch.float32)
        arrays = np.stack([as_image(f, "driving frame") for f in frames])
        return torch.from_numpy(arrays).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)

    def _face_landmarks(self, frames: torch.Tensor) -> List[Optional[np.ndarray]]:
        """The 68 landmarks ``(68, 2)`` of each frame of ``(T, 3, H, W)`` in its pixels (None: no face)."""
        out: List[Optional[np.ndarray]] = []
        for image in tensor_to_images(frames):
            face = select_face(self.face_detector.detect(image, landmarks=True))
            out.append(face.landmarks if face is not None and usable_landmarks(face.landmarks) else None)
        return out

    def _animate_landmarks(self, frames: torch.Tensor, return_details: bool,
                           landmarks: Optional[List[Optional[np.ndarray]]],
                           model_frames: Optional[torch.Tensor] = None):
        """The landmark stage's per-batch step: ``(T, 3, H, W)`` -> ``(T, 3, O, O)`` (see :meth:`animate_tensor`);
        with ``return_details`` also the driving depth of ``model_frames`` (the frames at the network's size;
        resized from ``frames`` when not given)."""
        frames = self._native_tensor(frames)
        if landmarks is None:
            landmarks = self._face_landmarks(frames)
        if len(landmarks) != frames.shape[0]:
            raise InputError(f"got landmarks of {len(landmarks)} frames for {frames.shape[0]} driving frames")
        if self.stage.anchor is None:
            first = next((k for k, lm in enumerate(landmarks) if usable_landmarks(lm)), None)
            if first is not None:
                self.stage.set_anchor(landmarks[first], frames[first:first + 1])
                self.last_landmarks = np.asarray(landmarks[first], np.float32)
        rows = []
        for points in landmarks:  # a frame without a face keeps the last landmarks seen
            if usable_landmarks(points):
                points = np.asarray(points, np.float32)
                if self.landmark_filter is not None:
                    points = self.landmark_filter(torch.from_numpy(points)).numpy()
                self.last_landmarks = points
            rows.append(self.last_landmarks)
        if self.stage.anchor is None:  # no face yet: the portrait as it is
            prediction = self.stage.source.expand(frames.shape[0], -1, -1, -1).clone()
        elif self.stage.mouth_fill == "generator":
            prediction = self._stage_with_generator(np.stack(rows))
        else:
            prediction = self.stage(np.stack(rows), frames)
        if not return_details:
            return prediction
        if model_frames is None:
            model_frames = self._frames_to_tensor(frames)
        with self._autocast():
            depth = self.model.estimate_depth(model_frames)
        return {"prediction": prediction, "driving_depth": depth.float()}

    def _stage_with_generator(self, landmarks: np.ndarray) -> torch.Tensor:
        """The landmark stage with the model's decoder painting the opening mouth: the generator is moved by the
        stage's own motion (its grid at the network's size) with the opening as the occlusion to draw."""
        with torch.no_grad():
            grid, targets = self.stage.motion(landmarks)
            size = self.size
            deformation = torch.nn.functional.interpolate(grid.permute(0, 3, 1, 2), size=(size, size),
                                                          mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
            occlusion = 1 - self.stage.opening_mask(targets, size)
            with self._autocast():
                out = self.model.render_motion(self.state, deformation, occlusion)
            decoded = out.get("prediction_model", out["prediction"]).float()
            generated = torch.nn.functional.interpolate(decoded, size=grid.shape[1:3], mode="bicubic",
                                                        align_corners=False).clamp(0, 1)
            return self.stage.render(grid, targets, landmarks, generated=generated)

    def __call__(self, frame: Frame) -> Frame:
        """Animate one driving frame (``(H, W, 3)`` uint8 -> ``(O, O, 3)`` uint8; ``(3, H, W)`` tensor ->
        ``(3, O, O)`` tensor)."""
        if self.stage_active:
            out = self.animate_tensor(self._native_tensor(frame))
        else:
            landmarks = self._landmarks(frame) if self.guide is not None else None
            out = self.animate_tensor(self._frames_to_tensor(frame), landmarks=landmarks)
        if isinstance(frame, torch.Tensor):
            return out[0]
        return tensor_to_images(out)[0]

    def animate_stream(self, frames: Iterable[Frame], batch_size: Optional[int] = None,
                       details: bool = False, progress: bool = False) -> Iterator[Any]:
        """Animate an iterable of driving frames lazily, ``batch_size`` at a time (default: the
        Animator's), yielding one result per frame in order.

        With ``details=False`` each item is what :meth:`__call__` returns; with ``details=True`` it is a
        dict ``{"prediction": (O, O, 3) uint8, "driving": (S, S, 3) uint8, "driving_depth": (S, S) float32}``
        (with the landmark stage ``driving`` is the frame as given).
        Batched and per-frame results are equal (up to float rounding). ``progress=True`` shows a tqdm bar
        (silent by default).
        """
        size = self.batch_size if batch_size is None else int(batch_size)
        if size < 1:
            raise InputError(f"batch size must be at least 1, got {size}")
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=len(frames) if hasattr(frames, "__len__") else None, unit="frame")
        batch: List[Frame] = []
        for frame in frames:
            batch.append(frame)
            if len(batch) == size:
                yield from self._emit(batch, details)
                batch = []
        if batch:
            yield from self._emit(batch, details)

    def _emit(self, batch: List[Frame], details: bool) -> Iterator[Any]:
        tensors = isinstance(batch[0], torch.Tensor)
        # at the network's size: the keypoint path's input, the depth panel
        driving = self._frames_to_tensor(batch) if details or not self.stage_active else None
        if self.stage_active:  # the landmark stage reads the frames as given
            native = self._native_tensor(batch)
            out = self._animate_landmarks(native, details, None, driving if details else None)
        else:
            landmarks = self._landmarks(batch) if self.guide is not None else None
            out = self.animate_tensor(driving, return_details=details, landmarks=landmarks)
        if not details:
            yield from (list(out) if tensors else tensor_to_images(out))
            return
        yield from self._details(out, native if self.stage_active else driving)

    @staticmethod
    def _details(out: dict, driving: torch.Tensor) -> Iterator[dict]:
        predictions = tensor_to_images(out["prediction"])
        drivings = tensor_to_images(driving)
        depths = out["driving_depth"][:, 0].float().cpu().numpy()
        for prediction, drv, depth in zip(predictions, drivings, depths):
            yield {"prediction": prediction, "driving": drv, "driving_depth": depth}

