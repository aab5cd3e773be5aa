"""The landmark motion stage: the driving face's 68 landmarks and the portrait's depth move the portrait at
output resolution; geometry draws the face, a fill paints only what no warp can show.

A small keypoint network trained on a few people follows a new driver's head only partly and does not open the
mouth or close the eyes of a new face; its 64 px render also softens the face. This stage needs no network per
frame. For each driving frame it builds one dense backward field over the portrait at the output size and
resamples the full-resolution portrait once along it:

1. **Rigid head motion in 3D.** The anchor frame's landmarks, lifted by the portrait's depth (the depth
   network's disparity, scaled so that the nose tip stands :data:`NOSE_RELIEF` inter-ocular distances in front
   of the face outline), form a 3D face shape. Each driving frame's pose relative to the anchor (rotation,
   scale, shift) is the weak-perspective camera fitted to its rigid landmarks (:data:`RIGID_POINTS`:
   outline above the chin, brows, nose, eyes). The pose is applied to every portrait pixel through its depth,
   so a head turn moves the nose more than the cheeks.
2. **Expression.** What the rigid pose does not explain of the driver's landmarks (mouth, jaw, eyelids,
   brows), in inter-ocular units, moves the portrait's landmarks, carried to every pixel by a thin-plate spline
   (kornia) pinned to zero on a ring around the face. Expression is *relative*: at the anchor the portrait
   keeps its own expression, and the driver's change from the anchor is added to it (the official relative
   mode). Two limits keep a portrait whose expression differs from the driver's anchor plausible: the lips
   never pass through each other (a driver who closes a mouth that the anchor had open cannot close the
   portrait's further than shut), and eyelids likewise.
3. **Region.** The head (an ellipse from the landmarks, taking in hair and forehead) follows the field with
   weight 1; outside it the weight falls off smoothly to 0 at ``1 + 2 falloff`` ellipse radii (a smoothstep),
   so hair, neck and shoulders follow partly and the background beyond stays still.
4. **One resample** (bicubic) of the portrait along the inverted field (Newton's method on the forward field);
   past the frame edge the portrait is mirrored. With a still driver the field is zero and the result is the
   portrait, pixel for pixel.
5. **What no warp can show**: the inside of an opening mouth. Where the target lips part wider than the
   portrait's, the inner-lip polygon is painted from the fill source (:data:`MOUTH_FILLS`): ``"driver"`` (the
   driver's own mouth interior, mapped onto the portrait's inner lips and colour-matched to the portrait's
   skin: teeth and tongue appear, but they are the driver's), ``"dark"`` (a shaded cavity in the portrait's
   lip colour: no identity leak, no teeth), ``"generator"`` (the model's decoder, fed the stage's motion with
   the opening as its occlusion: :meth:`~dagan.DaGAN.render_motion`; a network pass per frame) or ``"none"``
   (the stretched lips alone).

Coordinates are pixels (x, y) with pixel ``i``'s centre at ``i``; landmarks are the 68 iBUG points.

Over ~450 lines on purpose: one stage, whose steps (relief, pose, expression, region, inversion, mouth fill)
share the portrait's precomputed state; split up, each piece would take that state apart again.
"""
from __future__ import annotations

import logging
import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

logger = logging.getLogger("dagan")

#: the landmarks the head pose is fitted to: the face outline above the chin, the nose and the eye corners.
#: Not the mouth and chin (speech), the eyelids (blinks, squints) or the brows (raised, frowning): fitted with
#: them, a driver who closes the eyes or frowns reads as a head that nods or shrinks
RIGID_POINTS: Tuple[int, ...] = tuple(range(0, 5)) + tuple(range(12, 17)) + tuple(range(27, 36)) + (36, 39, 42, 45)
#: nose tip (30) in front of the mean of the outline points 0 and 16, in inter-ocular distances: sets the scale
#: of the portrait's relative depth (the depth network's disparity has no metric scale)
NOSE_RELIEF = 0.8
#: the portrait's disparity is smoothed with a Gaussian of this many inter-ocular distances before it moves
#: pixels
DEPTH_BLUR = 0.15
#: the share of the portrait's own depth in the relief the head turns on; the rest is a generic face shape
#: fitted to its landmarks (:func:`face_shape`). The shipped 64 px depth puts the brows almost as near as the
#: nose tip (a band across the forehead): alone, a nod of a few degrees folded the forehead over the eyes
DEPTH_WEIGHT = 0.5
#: fill sources for the inside of an opening mouth (see the module docstring)
MOUTH_FILLS: Tuple[str, ...] = ("driver", "dark", "generator", "none")
DEFAULT_MOUTH_FILL = "driver"
OUTER_LIPS, INNER_LIPS = tuple(range(48, 60)), tuple(range(60, 68))
#: pairs of (upper, lower) inner-lip and eyelid landmarks that must not cross
LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
LID_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))
#: chains of landmarks that keep their order: (axis, direction, points from the fixed end): down from the
#: nose through the upper lip, up from the chin through the lower lip, down from the brows to the upper
#: eyelids, inward from the outer mouth corners to the inner ones
ORDER_CHAINS = ((1, 1, (33, 51, 62)), (1, 1, (32, 50, 61)), (1, 1, (34, 52, 63)),
                (1, -1, (8, 57, 66)), (1, -1, (7, 58, 67)), (1, -1, (9, 56, 65)),
                (1, 1, (19, 37)), (1, 1, (20, 38)), (1, 1, (23, 43)), (1, 1, (24, 44)),
                (0, 1, (48, 60)), (0, -1, (54, 64)))
#: the least share of the portrait's spacing a chain keeps between neighbours
MIN_SPACING = 0.5


def interocular_distance(landmarks: torch.Tensor) -> torch.Tensor:
    """Distance between the eye centres (means of points 36-41 and 42-47) of ``(..., 68, 2)`` landmarks."""
    return (landmarks[..., 36:42, :].mean(-2) - landmarks[..., 42:48, :].mean(-2)).norm(dim=-1)


def usable_landmarks(points) -> bool:
    """Whether ``points`` are 68 finite landmarks of a face at least a few pixels across (eye centres more than
    two pixels apart): what the stage can move a face by."""
    if points is None:
        return False
    points = np.asarray(points, np.float64)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        return False
    return float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0))) > 2.0


def to_grid(points: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinates in a ``size``-pixel image -> ``grid_sample`` coordinates (``align_corners=False``)."""
    return (points + 0.5) * (2.0 / size) - 1.0


def pixel_grid(size: int, image_size: int, device=None) -> torch.Tensor:
    """``(size, size, 2)`` pixel coordinates (x, y) of a ``size x size`` grid of cell centres over an
    ``image_size`` image."""
    lin = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (image_size / size) - 0.5
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([gx, gy], -1)


def sample_points(image: torch.Tensor, points: torch.Tensor, image_size: Union[int, Tuple[int, int]]) -> torch.Tensor:
    """Bilinear samples of ``image (B, C, h, w)`` (covering a picture of ``image_size`` pixels, or
    ``(width, height)``) at pixel points ``(B, N, 2)`` -> ``(B, N, C)``."""
    width, height = (image_size, image_size) if isinstance(image_size, int) else image_size
    grid = torch.stack([to_grid(points[..., 0], width), to_grid(points[..., 1], height)], -1)[:, :, None]
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0].transpose(1, 2)


def face_shape(landmarks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """A generic face relief (unitless, larger = nearer) at pixel ``points (N, 2)`` from 68 ``landmarks``: half an
    ellipsoid over the face (the outline's width, from the chin to above the brows) with a nose ridge rising
    from the bridge (27) to the tip (30)."""
    lm = landmarks.float()
    centre = torch.stack([0.5 * (lm[0, 0] + lm[16, 0]), lm[29, 1]])
    top = lm[17:27, 1].min() - 0.3 * (lm[8, 1] - lm[17:27, 1].min())
    radii = torch.stack([0.55 * (lm[16, 0] - lm[0, 0]).abs(), 0.5 * (lm[8, 1] - top)]).clamp_min(1.0)
    rel = (points - centre) / radii
    cap = (1 - (rel ** 2).sum(-1)).clamp_min(0).sqrt()
    iod = float(interocular_distance(lm))
    bridge, tip = lm[27], lm[30]
    axis = tip - bridge
    along = (((points - bridge) * axis).sum(-1) / (axis * axis).sum().clamp_min(1e-6)).clamp(0, 1)
    across = (points - (bridge + along[:, None] * axis)).norm(dim=-1)
    nose = (0.3 + 0.7 * along) * torch.exp(-0.5 * (across / (0.15 * iod)) ** 2)
    return cap + 0.35 * nose


def skin_points(landmarks: torch.Tensor) -> torch.Tensor:
    """Points on the skin around the mouth ``(3, 2)``: the cheeks beside the mouth corners and the upper lip
    below the nose (for colour matching)."""
    return torch.stack([0.5 * (landmarks[3] + landmarks[48]), 0.5 * (landmarks[13] + landmarks[54]),
                        0.5 * (landmarks[33] + landmarks[51])])


def weak_perspective_pose(shape: torch.Tensor, points: torch.Tensor
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit ``points (B, N, 2) ~ s R[:2] shape + t`` for a centred 3D ``shape (N, 3)``: an affine camera by least
    squares, made a scaled rotation (the nearest one with equal singular values).

    Returns ``s (B,)``, ``R (B, 3, 3)`` (a rotation) and ``t (B, 2)``; float64 inside.
    """
    shape64, pts = shape.double(), points.double()
    design = torch.cat([shape64, torch.ones_like(shape64[:, :1])], 1)  # (N, 4)
    params = torch.linalg.lstsq(design.expand(pts.shape[0], -1, -1), pts).solution  # (B, 4, 2)
    camera = params[:, :3].transpose(1, 2)  # (B, 2, 3)
    u, sv, vh = torch.linalg.svd(camera, full_matrices=False)
    rows = u @ vh  # (B, 2, 3), orthonormal rows
    scale = sv.mean(-1)
    rotation = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], 1)
    shift = pts.mean(1) - scale[:, None] * torch.einsum("bij,j->bi", rows, shape64.mean(0))
    return scale.to(points.dtype), rotation.to(points.dtype), shift.to(points.dtype)


def polygon_mask(polygons: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Soft inside-masks ``(B, H, W)`` in [0, 1] of closed polygons ``(B, V, 2)`` over pixel points
    ``grid (H, W, 2)``: 1 inside, 0 outside, a one-pixel ramp across the edge (signed distance)."""
    start = polygons[:, None, None]  # (B, 1, 1, V, 2)
    end = torch.roll(polygons, -1, 1)[:, None, None]
    p = grid[None, :, :, None]  # (1, H, W, 1, 2)
    edge = end - start
    rel = p - start
    along = ((rel * edge).sum(-1) / (edge * edge).sum(-1).clamp_min(1e-9)).clamp(0, 1)
    dist = (rel - along[..., None] * edge).norm(dim=-1).amin(-1)  # (B, H, W)
    # even-odd rule for the sign
    crosses = ((start[..., 1] > p[..., 1]) != (end[..., 1] > p[..., 1])) & (
        p[..., 0] < (end[..., 0] - start[..., 0]) * (p[..., 1] - start[..., 1])
        / (end[..., 1] - start[..., 1] + 1e-12) + start[..., 0])
    inside = crosses.sum(-1) % 2 == 1
    signed = torch.where(inside, dist, -dist)
    return (signed + 0.5).clamp(0, 1)


class LandmarkMotion:
    """The landmark motion stage for one portrait: :meth:`set_source`, :meth:`set_anchor`, then call it on
    driving frames' landmarks.

    Args:
        output_size: side of the square result in pixels (the portrait is given at this size).
        field_size: side of the grid the motion field is computed on (then upsampled); default
            a quarter of ``output_size``, at least 64 pixels (at most ``output_size``): the field is smooth, a
            finer grid looked the same on the shared clips and cost twice the time.
        mouth_fill: one of :data:`MOUTH_FILLS`.
        nose_relief: see :data:`NOSE_RELIEF`.
        depth_weight: see :data:`DEPTH_WEIGHT`.
        falloff: half the width of the fall-off outside the head ellipse, in units of the ellipse's radii.

    Example::

        >>> stage = LandmarkMotion(256)
        >>> stage.set_source(portrait, portrait_landmarks, disparity)   # (1, 3, 256, 256), (68, 2), (1, 1, h, w)
        >>> stage.set_anchor(first_frame_landmarks, first_frame)
        >>> out = stage(frame_landmarks, frames)                         # (B, 68, 2), (B, 3, H, W) -> (B, 3, 256, 256)
    """

    def __init__(self, output_size: int, field_size: Optional[int] = None, mouth_fill: str = DEFAULT_MOUTH_FILL,
                 nose_relief: float = NOSE_RELIEF, falloff: float = 0.6, iterations: int = 6,
                 depth_blur: float = DEPTH_BLUR, depth_weight: float = DEPTH_WEIGHT):
        if mouth_fill not in MOUTH_FILLS:
            raise InputError(f"mouth fill must be one of {', '.join(MOUTH_FILLS)}, got {mouth_fill!r}")
        self.output_size = int(output_size)
        self.field_size = int(field_size or min(self.output_size, max(64, self.output_size // 4)))
        self.mouth_fill = mouth_fill
        self.nose_relief = float(nose_relief)
        self.falloff = float(falloff)
        self.iterations = int(iterations)
        self.depth_blur = float(depth_blur)
        if not 0.0 <= float(depth_weight) <= 1.0:
            raise InputError(f"depth weight must be in [0, 1], got {depth_weight}")
        self.depth_weight = float(depth_weight)
        self.source: Optional[torch.Tensor] = None
        self.anchor: Optional[torch.Tensor] = None

    # ------------------------------------------------------------------------------------- set-up
    @property
    def ready(self) -> bool:
        return self.source is not None and self.anchor is not None

    def set_source(self, image: torch.Tensor, landmarks: Union[np.ndarray, torch.Tensor],
                   disparity: Optional[torch.Tensor]) -> None:
        """The portrait ``image (1, 3, S, S)`` in [0, 1] (``S`` = ``output_size``), its 68 ``landmarks`` in
        pixels of ``image``, and its ``disparity (1, 1, h, w)`` (larger = nearer; None: a flat face)."""
        size = self.output_size
        if image.dim() != 4 or image.shape[0] != 1 or tuple(image.shape[2:]) != (size, size):
            raise InputError(f"the stage's portrait must be (1, 3, {size}, {size}), got {tuple(image.shape)}")
        if not usable_landmarks(landmarks):
            raise InputError("the portrait's landmarks are degenerate (eyes closer than two pixels)")
        device = image.device
        self.source, self.anchor = None, None
        lm = torch.as_tensor(np.asarray(landmarks, np.float32), device=device).reshape(68, 2)
        iod = float(interocular_distance(lm))
        field = pixel_grid(self.field_size, size, device)  # (f, f, 2)
        self.field_points = field
        depth = self._relief(disparity, lm, field, iod)
        self.depth_field, self.depth_landmarks = depth
        self.centre = lm[list(RIGID_POINTS)].mean(0)
        self.depth_centre = self.depth_landmarks[list(RIGID_POINTS)].mean()
        self.weight = self._head_weight(lm, field)
        self.ring = self._ring(lm)
        self.control_points = self._separated(lm, 0.15 * iod)
        self.spline = self._spline_operator(torch.cat([self.control_points, self.ring]), field)
        self.output_points = pixel_grid(size, size, device)
        self.source_landmarks, self.source_iod = lm, iod
        self.source = image.float()

    def _relief(self, disparity: Optional[torch.Tensor], lm: torch.Tensor, field: torch.Tensor, iod: float):
        """Relative depth toward the camera, in pixels: at the field points ``(f, f)`` and at the landmarks
        ``(68,)``. The mean of the portrait's own depth (the disparity, scaled so that the nose tip stands
        ``nose_relief * iod`` in front of the outline points 0 and 16) and a generic face shape fitted to its
        landmarks (:func:`face_shape`, scaled alike), ``depth_weight`` to ``1 - depth_weight``; clamped behind
        at the outline's depth (background and neck do not swing the other way)."""
        points = torch.cat([field.reshape(-1, 2), lm])
        shape = self._calibrated(face_shape(lm, points), iod)
        net = None
        if disparity is not None and self.depth_weight > 0:
            from kornia.filters import gaussian_blur2d

            disp = disparity.float().to(field.device)
            # the face's relief is smooth at the scale of a turn; the network's blotches would only crease it
            sigma = self.depth_blur * iod * disp.shape[-1] / self.output_size
            if sigma > 0.3:
                half = int(math.ceil(3 * sigma))
                disp = gaussian_blur2d(disp, (2 * half + 1, 2 * half + 1), (sigma, sigma), border_type="replicate")
            net = self._calibrated(sample_points(disp, points[None], self.output_size)[0, :, 0], iod)
            if net is None:
                logger.warning("the portrait's depth does not put the nose in front of the face outline: the head "
                               "turns on a generic face shape")
        relief = shape if net is None else self.depth_weight * net + (1 - self.depth_weight) * shape
        count = field.shape[0] * field.shape[1]
        return relief[:count].reshape(field.shape[:2]), relief[count:]

    def _calibrated(self, values: torch.Tensor, iod: float) -> Optional[torch.Tensor]:
        """Relief values at the field points followed by the 68 landmarks, scaled so that the nose tip (30)
        stands ``nose_relief * iod`` in front of the outline points 0 and 16, and floored at the outline's
        nearest point; None when the nose is not in front."""
        at_lm = values[-68:]
        rise = float(at_lm[30] - 0.5 * (at_lm[0] + at_lm[16]))
        if not rise > 1e-4:
            return None
        floor = float(at_lm[list(range(17))].min())
        return self.nose_relief * iod / rise * (values.clamp_min(floor) - floor)

    def _ellipse(self, lm: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Centre ``(2,)`` and radii ``(2,)`` of the head ellipse: the face outline widened for the hair,
        raised to take in the forehead."""
        width = (lm[16] - lm[0]).norm()
        top = lm[17:27, 1].min()
        chin = lm[8, 1]
        height = chin - top
        centre = torch.stack([0.5 * (lm[0, 0] + lm[16, 0]), chin - 0.62 * height - 0.1 * width])
        radii = torch.stack([0.72 * width, 0.62 * height + 0.45 * width])
        return centre, radii

    def _head_weight(self, lm: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        centre, radii = self._ellipse(lm)
        r = ((points - centre) / radii).norm(dim=-1)
        u = ((r - 1) / (2 * self.falloff)).clamp(0, 1)  # 0 on the ellipse, 1 where the background is still
        return 1 - u * u * (3 - 2 * u)

    @staticmethod
    def _spline_operator(centres: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """The thin-plate spline through ``centres (K, 2)`` as a linear map from values at the centres to values
        at ``points (f, f, 2)``: ``(f * f, K)``, so that a frame's field is one matrix product (scipy's TPS
        interpolator fitted once to the K unit vectors)."""
        from scipy.interpolate import RBFInterpolator

        basis = RBFInterpolator(centres.double().cpu().numpy(), np.eye(centres.shape[0]),
                                kernel="thin_plate_spline", degree=1)
        operator = basis(points.reshape(-1, 2).double().cpu().numpy())
        return torch.from_numpy(operator).to(points.device, torch.float32)

    @staticmethod
    def _separated(lm: torch.Tensor, gap: float) -> torch.Tensor:
        """The landmarks as spline centres: closed lips and eyelids put two landmarks on one pixel, which a
        spline cannot tell apart, so each (upper, lower) pair is pushed at least ``gap`` pixels apart."""
        out = lm.clone()
        for upper, lower in LIP_PAIRS + LID_PAIRS:
            short = (gap - (out[lower, 1] - out[upper, 1])).clamp_min(0) * 0.5
            out[upper, 1] -= short
            out[lower, 1] += short
        return out

    def _ring(self, lm: torch.Tensor, count: int = 16) -> torch.Tensor:
        """Points where the expression field is pinned to zero: a ring around the face and the image corners."""
        centre, radii = self._ellipse(lm)
        angles = torch.arange(count, device=lm.device, dtype=torch.float32) * (2 * math.pi / count)
        ring = centre + 1.25 * radii * torch.stack([torch.cos(angles), torch.sin(angles)], -1)
        s = float(self.output_size - 1)
        corners = torch.tensor([[0.0, 0.0], [s, 0.0], [0.0, s], [s, s]], device=lm.device)
        return torch.cat([ring, corners])

    def set_anchor(self, landmarks: Union[np.ndarray, torch.Tensor], frame: Optional[torch.Tensor] = None) -> None:
        """The anchor of relative motion: its 68 ``landmarks`` (pixels of the driving frames) and, for the
        ``"driver"`` mouth fill, the frame ``(1, 3, H, W)`` in [0, 1] (unused otherwise)."""
        if self.source is None:
            raise InputError("set the stage's portrait first (LandmarkMotion.set_source)")
        device = self.source.device
        lm = torch.as_tensor(np.asarray(landmarks, np.float32), device=device).reshape(68, 2)
        iod = float(interocular_distance(lm))
        if not usable_landmarks(landmarks):
            raise InputError("the anchor frame's landmarks are degenerate (eyes closer than two pixels)")
        ratio = iod / self.source_iod
        centre = lm[list(RIGID_POINTS)].mean(0)
        lift = (self.depth_landmarks - self.depth_centre) * ratio
        self.anchor = lm
        self.anchor_iod = iod
        self.anchor_centre = centre
        self.anchor_shape = torch.cat([lm - centre, lift[:, None]], 1)  # (68, 3), the driver's pixels

    # ---------------------------------------------------------------------------------- per frame
    def landmark_motion(self, landmarks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The driving frames' pose and expression ``landmarks (B, 68, 2)`` -> scale ``(B,)``, rotation
        ``(B, 3, 3)``, the head centre's shift in portrait pixels ``(B, 2)`` and the expression displacement of
        the portrait's landmarks in portrait pixels ``(B, 68, 2)``."""
        rigid = list(RIGID_POINTS)
        shape = self.anchor_shape
        scale, rotation, shift = weak_perspective_pose(shape[rigid] - shape[rigid].mean(0), landmarks[:, rigid])
        fitted = scale[:, None, None] * torch.einsum("bij,nj->bni", rotation[:, :2], shape - shape[rigid].mean(0))
        fitted = fitted + shift[:, None]
        ratio = self.source_iod / self.anchor_iod
        residual = (landmarks - fitted) / scale[:, None, None] * ratio
        anchor_centre = self.anchor_centre + shape[rigid, :2].mean(0)  # the shape's own centre
        head_shift = (shift - anchor_centre) * ratio
        return scale, rotation, head_shift, residual

    def rigid_targets(self, points: torch.Tensor, depth: torch.Tensor, scale: torch.Tensor, rotation: torch.Tensor,
                      head_shift: torch.Tensor) -> torch.Tensor:
        """Where the rigid pose moves portrait pixels ``points (..., 2)`` with relief ``depth (...)`` ->
        ``(B, ..., 2)``."""
        rel = torch.cat([points - self.centre, (depth - self.depth_centre)[..., None]], -1)
        flat = rel.reshape(-1, 3)
        moved = torch.einsum("bij,nj->bni", rotation[:, :2], flat) * scale[:, None, None]
        moved = moved + self.centre + head_shift[:, None]
        return moved.reshape(rotation.shape[0], *points.shape[:-1], 2)

    def _limit_expression(self, targets: torch.Tensor) -> torch.Tensor:
        """Keep the face from folding where the driver's expression, carried onto a face of other proportions,
        would push one feature through the next: along each chain of :data:`ORDER_CHAINS` a point keeps at
        least :data:`MIN_SPACING` of the portrait's spacing from the one before it (the upper lip stays under
        the nose, each lip keeps half its thickness, the lower lip stays above the chin, the brows above the
        eyelids, the inner mouth corners inside the outer ones), and the two sides of the mouth's opening and of
        each eye never cross (they may close)."""
        out = targets.clone()
        src = self.source_landmarks
        for axis, sign, chain in ORDER_CHAINS:
            for before, after in zip(chain[:-1], chain[1:]):
                least = MIN_SPACING * (sign * (src[after, axis] - src[before, axis])).clamp_min(0)
                bound = out[:, before, axis] + sign * least
                out[:, after, axis] = (torch.maximum(out[:, after, axis], bound) if sign > 0
                                       else torch.minimum(out[:, after, axis], bound))
        for upper, lower in LIP_PAIRS + LID_PAIRS:
            gap = out[:, lower, 1] - out[:, upper, 1]
            push = (-gap).clamp_min(0) * 0.5
            out[:, upper, 1] -= push
            out[:, lower, 1] += push
        return out

    def forward_field(self, landmarks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Forward displacement ``(B, f, f, 2)`` of the portrait's field points, and the target landmarks
        ``(B, 68, 2)`` (where the portrait's landmarks go)."""
        scale, rotation, head_shift, residual = self.landmark_motion(landmarks)
        rigid_lm = self.rigid_targets(self.source_landmarks, self.depth_landmarks, scale, rotation, head_shift)
        targets = self._limit_expression(rigid_lm + residual * scale[:, None, None])
        expression = targets - rigid_lm  # in the moved head's pixels
        batch = landmarks.shape[0]
        # the thin-plate spline is linear in its values: one precomputed operator per portrait
        values = torch.cat([expression, expression.new_zeros(batch, self.ring.shape[0], 2)], 1)
        expr_field = torch.einsum("pk,bkc->bpc", self.spline, values)
        expr_field = expr_field.reshape(batch, self.field_size, self.field_size, 2)
        rigid_field = self.rigid_targets(self.field_points, self.depth_field, scale, rotation, head_shift)
        rigid_field = rigid_field - self.field_points
        return self.weight[None, ..., None] * (rigid_field + expr_field), targets

    def backward_grid(self, displacement: torch.Tensor) -> torch.Tensor:
        """Invert a forward displacement field ``(B, f, f, 2)`` (pixels): the ``grid_sample`` grid
        ``(B, S, S, 2)`` of the output (where each output pixel samples the portrait).

        Newton's method on ``p + d(p) = q`` with the field's own Jacobian (finite differences): an opening mouth
        stretches the closed lips' contact line many times over, where plain fixed-point iteration diverges.
        Where the field folds (a turned face's far cheek passing over its outline) it starts from the
        front-most point that lands in the output cell, so the nearer surface is the one seen."""
        size, f = self.output_size, self.field_size
        batch = displacement.shape[0]
        field = displacement.permute(0, 3, 1, 2)  # (B, 2, f, f)
        spacing = size / f
        d_dy, d_dx = torch.gradient(field, dim=(2, 3), spacing=spacing)
        # per point: displacement (2) and the Jacobian of the forward map I + grad d (4)
        stack = torch.cat([field, 1 + d_dx[:, :1], d_dy[:, :1], d_dx[:, 1:], 1 + d_dy[:, 1:]], 1)
        targets = self.field_points[None].expand(batch, -1, -1, -1)

        def at(points: torch.Tensor) -> torch.Tensor:
            return F.grid_sample(stack, to_grid(points, size), mode="bilinear", padding_mode="border",
                                 align_corners=False).permute(0, 2, 3, 1)

        source = self._front_most_start(displacement, targets - at(targets)[..., :2])
        for _ in range(self.iterations):
            values = at(source)
            residual = targets - source - values[..., :2]
            a, b, c, d = values[..., 2], values[..., 3], values[..., 4], values[..., 5]
            det = a * d - b * c
            det = torch.where(det.abs() < 1e-3, torch.full_like(det, 1e-3), det)
            step = torch.stack([(d * residual[..., 0] - b * residual[..., 1]) / det,
                                (a * residual[..., 1] - c * residual[..., 0]) / det], -1)
            source = source + step.clamp(-spacing * 4, spacing * 4)
        if f != size:  # upsample the displacement, not the positions: still regions stay exact to the border
            back = (source - targets).permute(0, 3, 1, 2)
            back = F.interpolate(back, size=(size, size), mode="bilinear", align_corners=False)
            source = self.output_points + back.permute(0, 2, 3, 1)
        return to_grid(source, size)

    def _front_most_start(self, displacement: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """Starting points of the inversion ``(B, f, f, 2)``: for each output cell the field point with the
        largest relief among those the forward field moves into it (a z-buffer over the field grid);
        ``fallback`` where none lands (a stretched region)."""
        batch, f = displacement.shape[0], self.field_size
        cells = f * f
        moved = (self.field_points + displacement).reshape(batch, cells, 2)
        cell = torch.floor((moved + 0.5) * (f / self.output_size)).long()
        inside = ((cell >= 0) & (cell < f)).all(-1)
        target = (cell[..., 1].clamp(0, f - 1) * f + cell[..., 0].clamp(0, f - 1))
        depth = (self.depth_field.reshape(-1) * 16).round().long().clamp_min(0)
        key = depth * cells + torch.arange(cells, device=depth.device)  # relief first, then the point's index
        key = torch.where(inside, key[None].expand(batch, -1), torch.full_like(target, -1))
        best = torch.full((batch, cells), -1, dtype=torch.long, device=key.device)
        best.scatter_reduce_(1, target, key, reduce="amax", include_self=True)
        found = best >= 0
        start = self.field_points.reshape(cells, 2)[(best % cells).clamp_min(0)]
        start = torch.where(found[..., None], start, fallback.reshape(batch, cells, 2))
        return start.reshape(batch, f, f, 2)

    def motion(self, landmarks: Union[np.ndarray, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Driving ``landmarks (B, 68, 2)`` -> the output's sampling grid ``(B, S, S, 2)`` into the portrait
        (``grid_sample`` coordinates) and the target landmarks ``(B, 68, 2)`` (where the portrait's go)."""
        if not self.ready:
            raise InputError("the landmark motion stage needs a portrait and an anchor (set_source, set_anchor)")
        lm = torch.as_tensor(np.asarray(landmarks, np.float32) if not isinstance(landmarks, torch.Tensor)
                             else landmarks, device=self.source.device).float().reshape(-1, 68, 2)
        displacement, targets = self.forward_field(lm)
        return self.backward_grid(displacement), targets

    def render(self, grid: torch.Tensor, targets: torch.Tensor, landmarks: Union[np.ndarray, torch.Tensor],
               frames: Optional[torch.Tensor] = None, generated: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One bicubic resample of the portrait along ``grid``, then the mouth fill: ``frames (B, 3, H, W)``
        for ``"driver"``, ``generated (B, 3, S, S)`` (the generator's render of the same motion) for
        ``"generator"``. Returns ``(B, 3, S, S)`` in [0, 1]."""
        lm = torch.as_tensor(np.asarray(landmarks, np.float32) if not isinstance(landmarks, torch.Tensor)
                             else landmarks, device=self.source.device).float().reshape(-1, 68, 2)
        # what a moved head uncovers past the frame edge is mirrored from inside it: a head cut by the top edge
        # that moves down shows more hair, where the edge's pixels repeated showed streaks
        out = F.grid_sample(self.source.expand(grid.shape[0], -1, -1, -1), grid, mode="bicubic",
                            padding_mode="reflection", align_corners=False).clamp(0, 1)
        if self.mouth_fill != "none":
            out = self._fill_mouth(out, targets, lm, frames, generated)
        return out

    def opening_mask(self, targets: torch.Tensor, size: int) -> torch.Tensor:
        """Where the mouth opens wider than the portrait's own: ``(B, 1, size, size)`` in [0, 1] (the inner-lip
        polygon of ``targets``, weighted by how far it opened), e.g. the occlusion a generator must draw."""
        points = pixel_grid(size, self.output_size, targets.device)
        mask = polygon_mask(targets[:, list(INNER_LIPS)], points) * self._opening_strength(targets)[:, None, None]
        return mask[:, None]

    @torch.no_grad()
    def __call__(self, landmarks: Union[np.ndarray, torch.Tensor], frames: Optional[torch.Tensor] = None,
                 generated: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Animate the portrait: driving ``landmarks (B, 68, 2)`` (pixels of the driving frames) and, for the
        ``"driver"`` mouth fill, the ``frames (B, 3, H, W)`` in [0, 1] -> ``(B, 3, S, S)`` in [0, 1]."""
        grid, targets = self.motion(landmarks)
        return self.render(grid, targets, landmarks, frames, generated)

    # ------------------------------------------------------------------------------------- mouth
    def _opening_strength(self, targets: torch.Tensor) -> torch.Tensor:
        """``(B,)`` in [0, 1]: how much wider than the portrait's own the target lips part (full at 0.04 iod)."""
        own_gap = (self.source_landmarks[66, 1] - self.source_landmarks[62, 1]).clamp_min(0)
        gap = (targets[:, 66, 1] - targets[:, 62, 1]).clamp_min(0)
        return ((gap - own_gap) / (0.04 * self.source_iod)).clamp(0, 1)

    def _fill_mouth(self, out: torch.Tensor, targets: torch.Tensor, landmarks: torch.Tensor,
                    frames: Optional[torch.Tensor], generated: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Paint the target inner-lip polygon where the lips part wider than the portrait's own."""
        strength = self._opening_strength(targets)
        if not bool((strength > 0).any()):
            return out
        inner = targets[:, list(INNER_LIPS)]
        lo = inner.amin((0, 1)).floor().clamp(0, self.output_size - 1).long()
        hi = inner.amax((0, 1)).ceil().clamp(0, self.output_size - 1).long() + 1
        x0, y0, x1, y1 = int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])
        if x1 - x0 < 2 or y1 - y0 < 2:
            return out
        box_points = self.output_points[y0:y1, x0:x1]
        mask = polygon_mask(inner, box_points) * strength[:, None, None]  # (B, h, w)
        if self.mouth_fill == "driver" and frames is not None:
            fill = self._driver_mouth(frames, landmarks, targets, box_points)
        elif self.mouth_fill == "generator" and generated is not None:
            fill = generated[:, :, y0:y1, x0:x1].float()
        else:
            fill = self._dark_mouth(inner, box_points)
        region = out[:, :, y0:y1, x0:x1]
        out = out.clone()
        out[:, :, y0:y1, x0:x1] = region + mask[:, None] * (fill - region)
        return out

    def _lip_colour(self) -> torch.Tensor:
        """Mean colour ``(3,)`` of the portrait's lips (outer-lip landmarks)."""
        return sample_points(self.source, self.source_landmarks[None, list(OUTER_LIPS)], self.output_size)[0].mean(0)

    def _dark_mouth(self, inner: torch.Tensor, box_points: torch.Tensor) -> torch.Tensor:
        """A shaded cavity in the lips' colour: darkest at the centre of the opening."""
        centre = inner.mean(1)  # (B, 2)
        half = (inner.amax(1) - inner.amin(1)).clamp_min(1.0) * 0.5
        r = ((box_points[None] - centre[:, None, None]) / half[:, None, None]).norm(dim=-1).clamp(0, 1)
        shade = 0.18 + 0.22 * r  # (B, h, w)
        return self._lip_colour()[None, :, None, None] * shade[:, None]

    def _driver_mouth(self, frames: torch.Tensor, landmarks: torch.Tensor, targets: torch.Tensor,
                      box_points: torch.Tensor) -> torch.Tensor:
        """The driver's mouth interior mapped onto the target lips (affine fit of the inner lips and mouth
        corners), colour-matched so that the driver's lips look like the portrait's."""
        from .guide import fit_affine

        ids = list(INNER_LIPS) + [48, 54]
        a, t = fit_affine(targets[:, ids].double(), landmarks[:, ids].double())  # portrait -> driver pixels
        a, t = a.float(), t.float()
        pts = torch.einsum("bij,hwj->bhwi", a, box_points) + t[:, None, None]
        height, width = frames.shape[2:]
        grid = torch.stack([(pts[..., 0] + 0.5) * (2.0 / width) - 1, (pts[..., 1] + 0.5) * (2.0 / height) - 1], -1)
        fill = F.grid_sample(frames.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        portrait_skin = sample_points(self.source, skin_points(self.source_landmarks)[None], self.output_size)
        driver_skin = torch.stack([sample_points(frames[i:i + 1].float(), skin_points(landmarks[i])[None],
                                                 (width, height))[0] for i in range(frames.shape[0])])
        gain = (portrait_skin.mean(1) / driver_skin.mean(1).clamp_min(1e-3)).clamp(0.75, 1.33)  # (B, 3)
        return (fill * gain[:, :, None, None]).clamp(0, 1)
